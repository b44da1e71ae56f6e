import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import SwitchboardClient

/// One load-generating process: opens its share of connections on a single event loop, then sends
/// and measures as its plan says. All state lives on that loop.
// @unchecked Sendable: mutable state is touched only on `loop`, except `iterator` (the `run` task's alone).
final class Worker: @unchecked Sendable {
    let plan: WorkerPlan
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let loop: any EventLoop
    private var report = WorkerReport()
    private var histogram = Histogram()
    private var channels: [any Channel] = []
    private var senders: [Sender] = []
    private var sending = false
    private var churning = false

    /// One connection that publishes: its sequence number, messages in flight and phase.
    // @unchecked Sendable: a sender's counters and phase are touched only on the worker's loop.
    final class Sender: @unchecked Sendable {
        let id: UInt32
        let channel: any Channel
        var seq: UInt32 = 0
        var inFlight = 0
        /// Where in its period (a fraction of 1 / rate) this sender sends: spread evenly over all senders,
        /// so a thousand senders at 5/s make a steady 5,000/s and not a burst of a thousand every 200 ms,
        /// whose draining time would be measured as latency.
        var phase = 0.0
        var channelName: String?
        init(id: UInt32, channel: any Channel) {
            self.id = id
            self.channel = channel
        }
    }

    /// Counts and times what arrives on one connection.
    // @unchecked Sendable: created on any thread, then used only on the worker's loop.
    final class Receiver: ClientFrameSink, @unchecked Sendable {
        unowned let worker: Worker
        var sender: Sender?
        var channelName: String?
        init(worker: Worker) { self.worker = worker }
        func received(_ frame: ServerFrame, on channel: any Channel) { worker.received(frame, by: self) }
        func disconnected() { worker.report.disconnected += 1 }
    }

    /// One TLS context for every connection (wss://), trusting the plan's CA.
    private let tls: NIOSSLContext?

    init(plan: WorkerPlan) throws {
        self.plan = plan
        self.loop = group.next()
        if let authority = plan.tlsAuthority {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(authority))
            tls = try NIOSSLContext(configuration: configuration)
        } else {
            tls = nil
        }
    }

    static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    func run() async throws {
        let commands = Self.readCommands()
        let ticker = loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            self.emit(final: false)
        }
        if plan.mode == .churn {
            try await waitFor("go", in: commands)
            loop.execute { self.startChurn() }
            try await waitFor("stop", in: commands)
            try await loop.submit { self.churning = false }.get()
            try await Task.sleep(for: .milliseconds(500))
        } else {
            await connectAll()
            try await loop.submit { self.emit(final: false) }.get()
            try await waitFor("go", in: commands)
            try await loop.submit { self.startTraffic() }.get()
            try await waitFor("stop", in: commands)
            try await loop.submit { self.sending = false }.get()
            try await waitFor("drain", in: commands)
        }
        try await loop.submit {
            ticker.cancel()
            self.emit(final: true)
        }.get()
        // The process exits next, which closes every socket at once; connections still being
        // opened by churn loops need no orderly teardown.
    }

    // MARK: connecting

    private func options(forIndex index: Int) -> ClientOptions {
        var options = ClientOptions(path: plan.path)
        if let prefix = plan.channelPath, let name = channelName(forIndex: index) { options.path = prefix + name }
        options.localAddress = "127.0.0.\(2 + index % max(plan.sourceAddresses, 1))"
        options.connectTimeout = .seconds(10)
        options.headers = plan.headers.map { ($0[0], $0[1]) }
        options.tls = tls
        options.serverHostname = tls == nil ? nil : "localhost"
        return options
    }

    private func connectAll() async {
        await withTaskGroup(of: Void.self) { group in
            var next = 0
            func launch() {
                guard next < plan.connections else { return }
                let local = next
                next += 1
                group.addTask { await self.connect(local) }
            }
            for _ in 0..<min(plan.connectConcurrency, plan.connections) { launch() }
            while await group.next() != nil { launch() }
        }
    }

    private func connect(_ local: Int) async {
        let index = plan.firstIndex + local
        let receiver = Receiver(worker: self)
        do {
            let (channel, _) = try await WebSocketClient.open(
                host: plan.host, port: plan.port(forIndex: index), options: options(forIndex: index), group: loop,
                sink: { _ in receiver })
            loop.execute {
                self.channels.append(channel)
                receiver.channelName = self.channelName(forIndex: index)
                if let name = receiver.channelName, self.plan.channelPath == nil {
                    // Counted as connected once the subscription is confirmed (see `received`).
                    channel.writeAndFlush(
                        ClientFrameEncoder.text(#"{"id":1,"cmd":"subscribe","channel":"\#(name)"}"#), promise: nil)
                } else {
                    self.report.connected += 1
                }
                if index < self.plan.totalSenders {
                    let sender = Sender(id: UInt32(index), channel: channel)
                    sender.channelName = receiver.channelName
                    receiver.sender = sender
                    self.senders.append(sender)
                }
            }
        } catch {
            loop.execute {
                self.report.connectFailures += 1
                self.report.lastError = "\(error)"
            }
        }
    }

    // MARK: traffic

    private func startTraffic() {
        guard plan.mode == .fanout || plan.mode == .echo, !senders.isEmpty else { return }
        sending = true
        if plan.ratePerSender > 0 {
            let start = Self.now()
            for sender in senders { sender.phase = Double(sender.id) / Double(max(plan.totalSenders, 1)) }
            loop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(1)) { task in
                guard self.sending else { return task.cancel() }
                let elapsed = Double(Self.now() - start) / 1e9
                for sender in self.senders {
                    let owed = Int(elapsed * self.plan.ratePerSender + sender.phase) - Int(sender.seq)
                    for _ in 0..<max(owed, 0) { self.send(sender) }
                }
            }
        } else {
            for sender in senders {
                for _ in 0..<max(plan.window, 1) { send(sender) }
            }
        }
    }

    private func channelName(forIndex index: Int) -> String? {
        guard let channel = plan.channel else { return nil }
        return plan.channels > 1 ? "\(channel)\(index % plan.channels)" : channel
    }

    private func send(_ sender: Sender) {
        if let name = sender.channelName {
            sender.seq &+= 1
            sender.inFlight += 1
            report.sent += 1
            let padding = String(repeating: "x", count: max(plan.messageSize - 40, 0))
            let data = #"{"t":\#(Self.now()),"s":\#(sender.id),"p":"\#(padding)"}"#
            let message =
                plan.channelPath != nil ? data : #"{"id":2,"cmd":"publish","channel":"\#(name)","data":\#(data)}"#
            sender.channel.writeAndFlush(ClientFrameEncoder.text(message), promise: nil)
            return
        }
        var payload = [UInt8](repeating: 0x2E, count: max(plan.messageSize, 16))
        withUnsafeBytes(of: Self.now().littleEndian) { payload.replaceSubrange(0..<8, with: $0) }
        withUnsafeBytes(of: sender.id.littleEndian) { payload.replaceSubrange(8..<12, with: $0) }
        withUnsafeBytes(of: sender.seq.littleEndian) { payload.replaceSubrange(12..<16, with: $0) }
        sender.seq &+= 1
        sender.inFlight += 1
        report.sent += 1
        let frame = ClientFrameEncoder.encode(opcode: 2, payload: payload, allocator: sender.channel.allocator)
        sender.channel.writeAndFlush(frame, promise: nil)
    }

    /// A protocol v1 text frame: the subscribe reply, a publish reply, or a publication push whose
    /// data carries the send time `t` and sender `s`. Scanned, not JSON-decoded: the generator must
    /// stay cheaper than the server it measures.
    private func receivedProtocol(_ payload: ByteBuffer, by receiver: Receiver) {
        let raw = plan.channelPath != nil
        let scanned = payload.withUnsafeReadableBytes { bytes -> (kind: Int, sent: Int?, from: Int?) in
            guard bytes.count > 12 else { return (0, nil, nil) }
            if !raw, Self.hasPrefix(bytes, Self.replyPrefix) { return (1, nil, nil) }
            guard raw || Self.hasPrefix(bytes, Self.pubPrefix) else { return (0, nil, nil) }
            return (2, Self.integer(after: Self.timeKey, in: bytes), Self.integer(after: Self.senderKey, in: bytes))
        }
        switch scanned.kind {
        case 1:
            report.connected += 1
            return
        case 2:
            report.received += 1
        default:
            return
        }
        let now = Self.now()
        if let sent = scanned.sent, now > UInt64(sent) { histogram.record((now - UInt64(sent)) / 1000) }
        guard let sender = receiver.sender, scanned.from == Int(sender.id) else { return }
        sender.inFlight -= 1
        if sending, plan.ratePerSender == 0, sender.inFlight < max(plan.window, 1) { send(sender) }
    }

    private static let replyPrefix = Array(#"{"id":1,"#.utf8)
    private static let pubPrefix = Array(#"{"push":"pub""#.utf8)
    private static let timeKey = Array(#""t":"#.utf8)
    private static let senderKey = Array(#""s":"#.utf8)

    private static func hasPrefix(_ bytes: UnsafeRawBufferPointer, _ prefix: [UInt8]) -> Bool {
        guard bytes.count >= prefix.count else { return false }
        for index in prefix.indices where bytes[index] != prefix[index] { return false }
        return true
    }

    /// The decimal integer right after the first occurrence of `key`.
    private static func integer(after key: [UInt8], in bytes: UnsafeRawBufferPointer) -> Int? {
        let count = bytes.count
        var start = 0
        while start + key.count <= count {
            if bytes[start] == key[0] {
                var matched = true
                for offset in 1..<key.count where bytes[start + offset] != key[offset] {
                    matched = false
                    break
                }
                if matched {
                    var index = start + key.count
                    var value = 0
                    var digits = 0
                    while index < count, bytes[index] >= 48, bytes[index] <= 57 {
                        value = value * 10 + Int(bytes[index] - 48)
                        index += 1
                        digits += 1
                    }
                    return digits > 0 ? value : nil
                }
            }
            start += 1
        }
        return nil
    }

    fileprivate func received(_ frame: ServerFrame, by receiver: Receiver) {
        if receiver.channelName != nil {
            if frame.opcode == 1 { receivedProtocol(frame.payload, by: receiver) }
            return
        }
        // Counted from the moment the connection is open, so a worker told "go" a moment later than
        // the sender's worker does not miss the first broadcasts.
        guard frame.opcode == 2, frame.payload.readableBytes >= 16 else { return }
        report.received += 1
        let reader = frame.payload.readerIndex
        guard let sent = frame.payload.getInteger(at: reader, endianness: .little, as: UInt64.self),
            let from = frame.payload.getInteger(at: reader + 8, endianness: .little, as: UInt32.self)
        else { return }
        let now = Self.now()
        if now > sent { histogram.record((now - sent) / 1000) }
        guard let sender = receiver.sender, sender.id == from else { return }
        sender.inFlight -= 1
        if sending, plan.ratePerSender == 0, sender.inFlight < max(plan.window, 1) { send(sender) }
    }

    // MARK: churn

    private func startChurn() {
        churning = true
        for slot in 0..<plan.connections { churnOnce(slot: slot, round: 0) }
    }

    /// One connection's life, again and again: open (TCP and upgrade), close, next. All on the worker's
    /// loop with futures: a task per connection would cost the generator more than the server.
    private func churnOnce(slot: Int, round: Int) {
        guard churning else { return }
        WebSocketClient.openFuture(
            host: plan.host, port: plan.port(forIndex: slot),
            options: options(forIndex: plan.firstIndex + slot + round),
            on: loop,
            sink: { _ in NullSink() }
        ).flatMap { channel, _ in
            channel.close().recover { _ in }  // already closed by the server is fine too
        }.assumeIsolated().whenComplete { result in
            switch result {
            case .success:
                self.report.churned += 1
            case .failure(let error):
                self.report.connectFailures += 1
                self.report.lastError = "\(error)"
            }
            self.churnOnce(slot: slot, round: round + 1)
        }
    }

    // MARK: helpers

    final class NullSink: ClientFrameSink, Sendable {
        func received(_ frame: ServerFrame, on channel: any Channel) {}
        func disconnected() {}
    }

    // MARK: reporting

    private func emit(final: Bool) {
        var report = self.report
        report.final = final
        if final { report.histogram = histogram }
        guard let data = try? JSONEncoder().encode(report), let line = String(data: data, encoding: .utf8) else {
            return
        }
        // Straight to the file descriptor: stdio's fflush(nil) would also take stdin's lock, held by
        // the thread blocked reading commands.
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    // MARK: commands from the coordinator, one word per line on stdin

    private static func readCommands() -> AsyncStream<String> {
        AsyncStream { continuation in
            Thread.detachNewThread {
                while let line = readLine() { continuation.yield(line.trimmingCharacters(in: .whitespaces)) }
                continuation.finish()
            }
        }
    }

    private var iterator: AsyncStream<String>.Iterator?

    private func waitFor(_ word: String, in commands: AsyncStream<String>) async throws {
        if iterator == nil { iterator = commands.makeAsyncIterator() }
        while let line = await iterator?.next() {
            if line == word { return }
        }
        throw CancellationError()
    }
}
