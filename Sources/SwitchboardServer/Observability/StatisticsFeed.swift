import NIOConcurrencyHelpers
import NIOCore
import SwitchboardNIO

/// Publishes the server's own statistics once per interval on `sys:stats`, or `sys:stats.<node id>` on a
/// node of a cluster, where every node has its own (the dashboard's feed): totals
/// and per-second rates of connections, messages, deliveries and queue drops, channels and subscriptions.
/// A tick reads every loop once (connections, users, channels): well under a millisecond at 10,000
/// connections, once a second.
public final class StatisticsFeed: Sendable {
    /// Where the statistics are published: `sys:stats`, or `sys:stats.<node id>` in a cluster.
    public let channel: String
    private let application: ChannelsApplication
    private let interval: TimeAmount
    // Lock: guards the previous sample (ticks run on the first loop, one at a time; the lock keeps it Sendable).
    private let state = NIOLockedValueBox<Sample?>(nil)

    struct Sample: Sendable {
        var at: NIODeadline
        var hub: HubStatistics
        var channels: ChannelsApplication.NodeStatistics
    }

    /// Publishes through `application` every `interval` (default 1 s) once `start()` is called.
    public init(application: ChannelsApplication, interval: TimeAmount = .seconds(1)) {
        self.application = application
        self.interval = interval
        self.channel = application.control.map { "sys:stats.\($0.nodeID)" } ?? "sys:stats"
    }

    /// Starts publishing on the hub's first loop (the application must be attached to a server).
    public func start() {
        guard let hub = application.loops?.hub, let loop = hub.eventLoops.first else { return }
        // Stops itself, on its loop, once the server drains: cancelling from outside could come after the
        // loops are gone.
        _ = loop.scheduleRepeatedAsyncTask(initialDelay: interval, delay: interval) { task in
            guard !hub.isShuttingDown else {
                task.cancel()
                return loop.makeSucceededVoidFuture()
            }
            return self.tick(hub: hub, on: loop)
        }
    }

    private func tick(hub: Hub, on loop: any EventLoop) -> EventLoopFuture<Void> {
        hub.statistics().and(application.statistics(on: loop)).flatMap { hubStatistics, channels in
            let now = NIODeadline.now()
            let previous = self.state.withLockedValue { state -> Sample? in
                defer { state = Sample(at: now, hub: hubStatistics, channels: channels) }
                return state
            }
            guard let before = previous else { return loop.makeSucceededVoidFuture() }
            let beforeChannels = before.channels
            let seconds = max(Double((now - before.at).nanoseconds) / 1e9, 0.001)
            func rate(_ now: Int, _ before: Int) -> Double { Double(max(now - before, 0)) / seconds }
            let transports = hub.connectionsByTransport.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }
                .joined(separator: ",")
            let data = """
                {"connections":\(hubStatistics.openConnections),\
                "connectsPerSecond":\(rate(hubStatistics.connectionsAccepted, before.hub.connectionsAccepted)),\
                "disconnectsPerSecond":\(rate(hubStatistics.connectionsClosed, before.hub.connectionsClosed)),\
                "messagesInPerSecond":\(rate(hubStatistics.messagesIn, before.hub.messagesIn)),\
                "messagesOutPerSecond":\(rate(hubStatistics.messagesOut, before.hub.messagesOut)),\
                "deliveriesPerSecond":\(rate(channels.deliveries, beforeChannels.deliveries)),\
                "queued":\(hubStatistics.queuedMessages),\
                "droppedPerSecond":\(rate(hubStatistics.queueDropped, before.hub.queueDropped)),\
                "channels":\(channels.channels),"subscriptions":\(channels.subscriptions),"users":\(channels.users),\
                "transports":{\(transports)}}
                """
            return self.application.publish(channel: self.channel, data: data, on: loop).map { _ in }
                .recover { _ in }
        }
    }
}
