%% The same-node ping-pong benchmark (Termite paper, section 7.2), as
%% benchmarks/pingpong.py runs it.
%%
%% Plain: ping sends {self(), N} and waits for any message; pong answers N.
%% Call: what termite.call and gen_server:call do: monitor the server, send
%% {self(), Ref, N}, take only {Ref, Reply} (or the 'DOWN'), demonitor; the echo
%% server answers {Ref, N}.
%%
%% Both servers live for the whole run.  After Warmup round trips of each,
%% Pairs rounds each time a plain window and a call window, plain first in one
%% round and call first in the next, so that a pair shares the machine's
%% moment.  A window runs chunks of Chunk round trips until at least WindowUs
%% microseconds and MinTrips round trips have passed; each gives round trips
%% per second.
%%
%% Run: erl -noshell -pa DIR -run pingpong main WindowUs MinTrips Pairs Warmup Chunk
%% Prints one line: @@ERLANG@@ plain_rates=R,.. plain_round_trips=N,..
%%                  call_rates=R,.. call_round_trips=N,.. schedulers=N
-module(pingpong).
-export([main/1]).

main(Texts) ->
    [WindowUs, MinTrips, Pairs, Warmup, Chunk] = [list_to_integer(T) || T <- Texts],
    Window = erlang:convert_time_unit(WindowUs, microsecond, native),
    Parent = self(),
    {Pid, Ref} = spawn_monitor(fun() ->
        Parent ! {self(), measure(Window, MinTrips, Pairs, Warmup, Chunk)}
    end),
    receive
        {Pid, {Plain, Call}} ->
            io:format("@@ERLANG@@ plain_rates=~s plain_round_trips=~s call_rates=~s call_round_trips=~s "
                      "schedulers=~b~n",
                      [rates(Plain), counts(Plain), rates(Call), counts(Call), erlang:system_info(schedulers_online)]),
            halt(0);
        {'DOWN', Ref, process, Pid, Reason} ->
            io:format(standard_error, "pingpong failed: ~p~n", [Reason]),
            halt(1)
    end.

measure(Window, MinTrips, Pairs, Warmup, Chunk) ->
    Servers = #{plain => spawn(fun() -> serve(plain) end), call => spawn(fun() -> serve(call) end)},
    [trips(Mode, Server, Warmup) || {Mode, Server} <- maps:to_list(Servers)],
    Rounds = [pair(I, Servers, Window, MinTrips, Chunk) || I <- lists:seq(1, Pairs)],
    [exit(Server, kill) || Server <- maps:values(Servers)],
    {[P || #{plain := P} <- Rounds], [C || #{call := C} <- Rounds]}.

%% One round: a window of each mode, in the order of this round.
pair(I, Servers, Window, MinTrips, Chunk) ->
    Order = case I rem 2 of 1 -> [plain, call]; 0 -> [call, plain] end,
    maps:from_list([{Mode, window(Mode, maps:get(Mode, Servers), Window, MinTrips, Chunk)} || Mode <- Order]).

window(Mode, Server, Window, MinTrips, Chunk) ->
    window(Mode, Server, Window, MinTrips, Chunk, erlang:monotonic_time(), 0).

window(Mode, Server, Window, MinTrips, Chunk, Start, Done0) ->
    trips(Mode, Server, Chunk),
    Done = Done0 + Chunk,
    Elapsed = erlang:monotonic_time() - Start,
    case Elapsed >= Window andalso Done >= MinTrips of
        true -> {Done / (erlang:convert_time_unit(Elapsed, native, nanosecond) / 1.0e9), Done};
        false -> window(Mode, Server, Window, MinTrips, Chunk, Start, Done)
    end.

trips(_Mode, _Server, 0) -> ok;
trips(plain, Server, Count) ->
    Server ! {self(), Count},
    receive _ -> ok end,
    trips(plain, Server, Count - 1);
trips(call, Server, Count) ->
    Count = call(Server, Count),
    trips(call, Server, Count - 1).

call(Server, Request) ->
    Ref = erlang:monitor(process, Server),
    Server ! {self(), Ref, Request},
    receive
        {Ref, Reply} ->
            erlang:demonitor(Ref, [flush]),
            Reply;
        {'DOWN', Ref, process, _, Reason} ->
            exit(Reason)
    end.

serve(plain) ->
    receive {Sender, N} -> Sender ! N end,
    serve(plain);
serve(call) ->
    receive {Sender, Tag, N} -> Sender ! {Tag, N} end,
    serve(call).

rates(Windows) -> join([float_to_list(Rate, [{decimals, 1}]) || {Rate, _} <- Windows]).
counts(Windows) -> join([integer_to_list(Done) || {_, Done} <- Windows]).

join(Texts) -> lists:join($,, Texts).
