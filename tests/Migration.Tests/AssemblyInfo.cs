// Each migration test runs two hosts, a guest and often a client on loopback. On a 2-core CI machine
// running those classes side by side starved connects and timers, so they run one after another.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
