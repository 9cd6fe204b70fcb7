%% The same-node ping-pong benchmark (Termite paper, section 7.2), as
%% benchmarks/pingpong.py runs it.
%%
%% Mode plain: ping sends {self(), N} and waits for any message; pong answers N.
%% Mode call: what termite.call and gen_server:call do: monitor the server, send
%% {self(), Ref, N}, take only {Ref, Reply} (or the 'DOWN'), demonitor; the echo
%% server answers {Ref, N}.
%%
%% After Warmup round trips, Windows measurements each run chunks of Chunk
%% round trips until at least WindowUs microseconds and MinTrips round trips
%% have passed; each gives round trips per second.
%%
%% Run: erl -noshell -pa DIR -run pingpong main Mode WindowUs MinTrips Windows Warmup Chunk
%% Prints one line: @@ERLANG@@ rates=R,R,.. round_trips=N,N,.. schedulers=N
-module(pingpong).
-export([main/1]).

main([ModeText, WindowText, MinTripsText, WindowsText, WarmupText, ChunkText]) ->
    Mode = list_to_atom(ModeText),
    [WindowUs, MinTrips, Windows, Warmup, Chunk] =
        [list_to_integer(T) || T <- [WindowText, MinTripsText, WindowsText, WarmupText, ChunkText]],
    Window = erlang:convert_time_unit(WindowUs, microsecond, native),
    Parent = self(),
    {Pid, Ref} = spawn_monitor(fun() ->
        Parent ! {self(), measure(Mode, Window, MinTrips, Windows, Warmup, Chunk)}
    end),
    receive
        {Pid, Measured} ->
            io:format("@@ERLANG@@ rates=~s round_trips=~s schedulers=~b~n",
                      [join([float_to_list(Rate, [{decimals, 1}]) || {Rate, _} <- Measured]),
                       join([integer_to_list(Done) || {_, Done} <- Measured]),
                       erlang:system_info(schedulers_online)]),
            halt(0);
        {'DOWN', Ref, process, Pid, Reason} ->
            io:format(standard_error, "pingpong failed: ~p~n", [Reason]),
            halt(1)
    end.

measure(Mode, Window, MinTrips, Windows, Warmup, Chunk) ->
    Server = spawn(fun() -> serve(Mode) end),
    trips(Mode, Server, Warmup),
    Measured = [window(Mode, Server, Window, MinTrips, Chunk) || _ <- lists:seq(1, Windows)],
    exit(Server, kill),
    Measured.

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

join(Texts) -> lists:join($,, Texts).
