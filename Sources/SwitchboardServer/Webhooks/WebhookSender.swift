import AsyncHTTPClient
import CoreMetrics
import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// Batches events and POSTs them, one batch at a time, in the order they were queued (so a channel's
/// events arrive in order): a batch that fails is sent again, with the same id, after a growing pause,
/// until the endpoint takes it (at least once). Events wait in a bounded queue meanwhile; past its bound
/// new ones are dropped, counted and logged. A batch the endpoint refuses as such (a 4xx other than 408
/// and 429) five times is dropped, counted and logged, rather than holding up every batch behind it.
final class WebhookSender: Sendable {
    private struct Batch: Sendable {
        let id: String
        let body: String
        let signature: String
        let events: Int
        var refusals = 0
    }

    /// Refusals (3xx, and 4xx other than 408 and 429) after which a batch is dropped.
    static let maxRefusals = 5

    private struct State {
        var queue = CircularBuffer<String>()
        /// What `queue` holds, in UTF-8 bytes.
        var queuedBytes = 0
        var inFlight: Batch?
        var timer: Scheduled<Void>?
        var failures = 0
    }

    let configuration: WebhookConfiguration
    private let node: String
    private let loop: any EventLoop
    private let client: HTTPClient
    private let key: SymmetricKey
    // Lock: guards the queue, the batch in flight and its timer, changed from every event loop.
    private let state = NIOLockedValueBox(State())
    private let batches: [String: Counter]
    private let dropped: Counter
    private let log: ThrottledLog

    init(configuration: WebhookConfiguration, node: String, metricsFactory: any MetricsFactory, logger: Logger) {
        self.configuration = configuration
        self.node = node
        self.loop = MultiThreadedEventLoopGroup.singleton.next()
        self.client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: configuration.timeout)))
        self.key = SymmetricKey(data: Data(configuration.secret.utf8))
        self.batches = Dictionary(
            uniqueKeysWithValues: ["delivered", "failed", "rejected"].map {
                (
                    $0,
                    Counter(
                        label: "switchboard_webhook_batches_total", dimensions: [("outcome", $0)],
                        factory: metricsFactory)
                )
            })
        self.dropped = Counter(label: "switchboard_webhook_events_dropped_total", factory: metricsFactory)
        self.log = ThrottledLog(interval: .seconds(10), logger: logger)
    }

    /// The pooled connections go with the sender (the client must be shut down before it is freed).
    deinit {
        client.shutdown { _ in }
    }

    /// Queues one event (a JSON object's text); sends a batch once there are `batchSize`, or `maxDelay`
    /// after the first. Callable from any thread.
    func enqueue(_ event: String) {
        enum Next { case nothing, send, drop }
        let next = state.withLockedValue { state -> Next in
            guard state.queue.count < configuration.maxQueuedEvents,
                state.queuedBytes + event.utf8.count <= configuration.maxQueuedBytes
            else { return .drop }
            state.queue.append(event)
            state.queuedBytes += event.utf8.count
            guard state.inFlight == nil else { return .nothing }
            if state.queue.count >= configuration.batchSize { return .send }
            if state.timer == nil {
                state.timer = loop.scheduleTask(in: configuration.maxDelay) { [weak self] in self?.sendNext() }
            }
            return .nothing
        }
        switch next {
        case .nothing: break
        case .send: sendNext()
        case .drop:
            dropped.increment()
            log.warning(
                "webhook queue full: event dropped", key: "dropped",
                metadata: ["queued": "\(configuration.maxQueuedEvents)", "url": "\(configuration.url)"])
        }
    }

    /// Sends what is queued at once and waits, at most `timeout`, until the endpoint took it all.
    func flush(within timeout: TimeAmount) async {
        let deadline = NIODeadline.now() + timeout
        sendNext()
        while queued > 0, NIODeadline.now() < deadline {
            try? await Task.sleep(for: .milliseconds(20))
            if state.withLockedValue({ $0.inFlight == nil }) { sendNext() }
        }
    }

    /// Events waiting, the batch in flight included.
    var queued: Int { state.withLockedValue { $0.queue.count + ($0.inFlight?.events ?? 0) } }

    private func sendNext() {
        let batch = state.withLockedValue { state -> Batch? in
            state.timer?.cancel()
            state.timer = nil
            guard state.inFlight == nil, !state.queue.isEmpty else { return nil }
            var events: [String] = []
            while events.count < configuration.batchSize, let event = state.queue.popFirst() {
                state.queuedBytes -= event.utf8.count
                events.append(event)
            }
            let id = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            let body =
                "{\"id\":\"\(id)\",\"node\":\(ServerMessage.quote(node)),\"events\":[\(events.joined(separator: ","))]}"
            let code = HMAC<SHA256>.authenticationCode(for: Data(body.utf8), using: key)
            let signature = code.map { String(format: "%02x", $0) }.joined()
            let batch = Batch(id: id, body: body, signature: signature, events: events.count)
            state.inFlight = batch
            return batch
        }
        if let batch { post(batch) }
    }

    private func post(_ batch: Batch) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "User-Agent", value: "switchboard")
        headers.add(name: "X-Switchboard-Signature", value: "sha256=\(batch.signature)")
        headers.add(name: "X-Switchboard-Batch", value: batch.id)
        let response: EventLoopFuture<UInt>
        do {
            let request = try HTTPClient.Request(
                url: configuration.url, method: .POST, headers: headers, body: .string(batch.body))
            response =
                client.execute(
                    request: request, delegate: StatusOnly(), eventLoop: .indifferent,
                    deadline: .now() + configuration.timeout
                ).futureResult
        } catch {
            response = loop.makeFailedFuture(error)
        }
        // The HTTP client's deadline should end it; this timer makes sure (a batch stuck in flight would stop
        // every batch after it).
        response.hop(to: loop).bounded(by: configuration.timeout + .seconds(1)).whenComplete { [weak self] result in
            guard let self else { return }
            switch result {
            case .success(let status) where (200..<300).contains(status):
                self.delivered()
            case .success(let status) where (300..<500).contains(status) && status != 408 && status != 429:
                var refused = batch
                refused.refusals += 1
                guard refused.refusals >= Self.maxRefusals else { return self.failed(refused, "HTTP \(status)") }
                self.batches["rejected"]?.increment()
                self.log.warning(
                    "webhook batch refused by the endpoint; dropped", key: "rejected",
                    metadata: ["url": "\(self.configuration.url)", "status": "\(status)", "events": "\(batch.events)"])
                self.delivered(counting: false)
            case .success(let status):
                self.failed(batch, "HTTP \(status)")
            case .failure(let error):
                self.failed(batch, "\(error)")
            }
        }
    }

    private func delivered(counting: Bool = true) {
        if counting { batches["delivered"]?.increment() }
        let sendNow = state.withLockedValue { state -> Bool in
            state.inFlight = nil
            state.failures = 0
            if state.queue.count >= configuration.batchSize { return true }
            if !state.queue.isEmpty, state.timer == nil {
                state.timer = loop.scheduleTask(in: configuration.maxDelay) { [weak self] in self?.sendNext() }
            }
            return false
        }
        if sendNow { sendNext() }
    }

    /// Tries the same batch again after 0.5 s, doubling to at most 30 s, with jitter.
    private func failed(_ batch: Batch, _ why: String) {
        batches["failed"]?.increment()
        let failures = state.withLockedValue { state -> Int in
            state.failures += 1
            return state.failures
        }
        log.warning(
            "webhook batch failed; it will be sent again", key: "failed",
            metadata: ["url": "\(configuration.url)", "error": "\(why)", "failures": "\(failures)"])
        let pause = min(500.0 * pow(2, Double(min(failures - 1, 10))), 30_000) * Double.random(in: 0.5...1)
        loop.scheduleTask(in: .milliseconds(Int64(pause))) { [weak self] in self?.post(batch) }
    }
}

/// Reads only the answer's status: whatever the endpoint puts in the body is not the server's concern.
private final class StatusOnly: HTTPClientResponseDelegate {
    typealias Response = UInt
    // Lock: guards the status, set when the head arrives (AHC calls a delegate on its task's loop).
    private let status = NIOLockedValueBox<UInt>(0)

    func didReceiveHead(task: HTTPClient.Task<UInt>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        status.withLockedValue { $0 = head.status.code }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<UInt>) throws -> UInt { status.withLockedValue { $0 } }
}
