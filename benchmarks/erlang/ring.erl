%% The ring benchmark (Termite paper, section 7.1), as benchmarks/ring.py runs it.
%%
%% A ring of Size processes passes a number round; each process decrements it
%% before passing it on, and a process that gets 0 relays 0 and ends.  The
%% measuring process builds the chain in reverse (each new process knows the
%% next one), sends the seed to the first, and is itself the closing link: it
%% forwards what it gets, decremented, until it gets 0.  The time covers
%% creating the processes as well as passing the messages.
%%
%% Run: erl -noshell -pa DIR -run ring main Size Seed
%% Prints one line: @@ERLANG@@ seconds=S create_s=S hops=N schedulers=N
-module(ring).
-export([main/1]).

main([SizeText, SeedText]) ->
    Size = list_to_integer(SizeText),
    Seed = list_to_integer(SeedText),
    Parent = self(),
    Start = erlang:monotonic_time(),
    %% A fresh process runs the ring, as termite.run starts a fresh main process.
    {Pid, Ref} = spawn_monitor(fun() -> Parent ! {self(), ring(Size, Seed)} end),
    receive
        {Pid, {Hops, Built}} ->
            End = erlang:monotonic_time(),
            io:format("@@ERLANG@@ seconds=~.9f create_s=~.9f hops=~b schedulers=~b~n",
                      [seconds(End - Start), seconds(Built - Start), Hops,
                       erlang:system_info(schedulers_online)]),
            halt(0);
        {'DOWN', Ref, process, Pid, Reason} ->
            io:format(standard_error, "ring failed: ~p~n", [Reason]),
            halt(1)
    end.

ring(Size, Seed) ->
    First = build(Size - 1, self()),
    Built = erlang:monotonic_time(),
    First ! Seed,
    {close(First, 0), Built}.

%% Count processes, each relaying to the one made before it.
build(0, Next) -> Next;
build(Count, Next) -> build(Count - 1, spawn(fun() -> relay(Next) end)).

relay(Next) ->
    receive
        0 -> Next ! 0;
        N -> Next ! N - 1, relay(Next)
    end.

%% The closing link: counts the messages it gets until the 0.
close(First, Hops) ->
    receive
        0 -> Hops + 1;
        N -> First ! N - 1, close(First, Hops + 1)
    end.

seconds(Native) -> erlang:convert_time_unit(Native, native, nanosecond) / 1.0e9.
