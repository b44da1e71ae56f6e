import Foundation

/// Spawns the worker processes, starts and stops them together, prints a progress line every
/// second and a final table plus one JSON line.
// @unchecked Sendable: `latest` and `finals` are guarded by `lock`; the rest is set before threads start.
final class Coordinator: @unchecked Sendable {
    private let plans: [WorkerPlan]
    private let serverPIDs: [Int32]
    private let redisPID: Int32?
    private let duration: Double
    private let settle: Double
    private var processes: [Process] = []
    private var inputs: [FileHandle] = []
    private let lock = NSLock()
    private var latest: [WorkerReport]
    private var finals: [WorkerReport?]

    private let receiversPerPublication: Int

    init(
        plans: [WorkerPlan], serverPIDs: [Int32], redisPID: Int32?, duration: Double, settle: Double,
        receiversPerPublication: Int
    ) {
        self.receiversPerPublication = receiversPerPublication
        self.plans = plans
        self.serverPIDs = serverPIDs
        self.redisPID = redisPID
        self.duration = duration
        self.settle = settle
        self.latest = Array(repeating: WorkerReport(), count: plans.count)
        self.finals = Array(repeating: nil, count: plans.count)
    }

    private var total: WorkerReport {
        lock.lock()
        defer { lock.unlock() }
        return latest.reduce(into: WorkerReport()) { sum, report in
            sum.connected += report.connected
            sum.connectFailures += report.connectFailures
            sum.sent += report.sent
            sum.received += report.received
            sum.disconnected += report.disconnected
            sum.churned += report.churned
            sum.lastError = report.lastError ?? sum.lastError
        }
    }

    func run() throws {
        let server = serverPIDs.isEmpty ? nil : ProcessStats(pids: serverPIDs)
        let redis = redisPID.map { ProcessStats(pids: [$0]) }
        let rssBefore = server?.rss()
        try spawn()
        let mode = plans[0].mode
        let planned = plans.reduce(0) { $0 + $1.connections }
        let start = Date()
        if mode != .churn {
            // Connect phase: wait until every connection is open or has failed.
            while true {
                let now = total
                progress("connect", now, since: start)
                if now.connected + now.connectFailures >= planned { break }
                Thread.sleep(forTimeInterval: 1)
            }
            Thread.sleep(forTimeInterval: settle)
        }
        let connectSeconds = Date().timeIntervalSince(start)
        let rssAfter = server?.rss()
        let cpuStart = server?.cpuMicros()
        let redisStart = redis?.cpuMicros()
        // The load generator's own cost: it must stay well below the server's to measure the server.
        let generator = ProcessStats(pids: processes.map(\.processIdentifier))
        let generatorStart = generator.cpuMicros()
        let atGo = total
        broadcast("go")
        let runStart = Date()
        var last = atGo
        while Date().timeIntervalSince(runStart) < duration {
            Thread.sleep(forTimeInterval: 1)
            let now = total
            progress(mode.rawValue, now, since: runStart, previous: last)
            last = now
        }
        broadcast("stop")
        let runSeconds = Date().timeIntervalSince(runStart)
        let cpuEnd = server?.cpuMicros()
        let redisEnd = redis?.cpuMicros()
        let generatorEnd = generator.cpuMicros()
        // Let in-flight messages land before counting losses: wait until deliveries stop (at most 15 s).
        var settled = total.received
        for _ in 0..<15 {
            Thread.sleep(forTimeInterval: 1)
            let now = total.received
            if now == settled { break }
            settled = now
        }
        broadcast("drain")
        for process in processes { process.waitUntilExit() }
        let finals = lock.withLock { self.finals.compactMap { $0 } }
        var histogram = Histogram()
        for report in finals { if let h = report.histogram { histogram.merge(h) } }
        let end = total
        summarize(
            mode: mode, planned: planned, end: end, atGo: atGo, histogram: histogram, runSeconds: runSeconds,
            connectSeconds: connectSeconds, rss: (rssBefore, rssAfter), cpu: (cpuStart, cpuEnd),
            redisCPU: (redisStart, redisEnd), generatorCPU: (generatorStart, generatorEnd))
    }

    private func spawn() throws {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        for (index, plan) in plans.enumerated() {
            let process = Process()
            process.executableURL = executable
            let json = String(decoding: try JSONEncoder().encode(plan), as: UTF8.self)
            process.arguments = ["worker", json]
            let output = Pipe()
            let input = Pipe()
            process.standardOutput = output
            process.standardInput = input
            try process.run()
            processes.append(process)
            inputs.append(input.fileHandleForWriting)
            Thread.detachNewThread { self.read(output.fileHandleForReading, worker: index) }
        }
    }

    private func read(_ handle: FileHandle, worker: Int) {
        var pending = Data()
        while true {
            let chunk = handle.availableData
            if chunk.isEmpty { return }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = pending[pending.startIndex..<newline]
                pending = Data(pending[pending.index(after: newline)...])
                guard let report = try? JSONDecoder().decode(WorkerReport.self, from: line) else { continue }
                lock.withLock {
                    latest[worker] = report
                    if report.final { finals[worker] = report }
                }
            }
        }
    }

    private func broadcast(_ word: String) {
        for input in inputs { try? input.write(contentsOf: Data((word + "\n").utf8)) }
    }

    private func progress(_ phase: String, _ now: WorkerReport, since: Date, previous: WorkerReport? = nil) {
        let elapsed = Date().timeIntervalSince(since)
        var line = String(
            format: "[%5.1fs] %@ connected=%d failed=%d", elapsed, phase, now.connected, now.connectFailures)
        if let previous {
            line += " sent/s=\(now.sent - previous.sent) delivered/s=\(now.received - previous.received)"
            line += " churn/s=\(now.churned - previous.churned) dropped=\(now.disconnected)"
        }
        if let error = now.lastError, now.connectFailures > 0 { line += " last_error=\"\(error)\"" }
        print(line)
        fflush(nil)
    }

    private func summarize(
        mode: WorkerPlan.Mode, planned: Int, end: WorkerReport, atGo: WorkerReport, histogram: Histogram,
        runSeconds: Double, connectSeconds: Double, rss: (Int?, Int?), cpu: (Int?, Int?), redisCPU: (Int?, Int?),
        generatorCPU: (Int?, Int?)
    ) {
        let connections = end.connected
        let delivered = end.received - atGo.received
        let expected = mode == .fanout ? end.sent * receiversPerPublication : (mode == .echo ? end.sent : 0)
        var result: [String: Double] = [
            "connections": Double(connections), "connect_failures": Double(end.connectFailures),
            "connect_seconds": connectSeconds, "run_seconds": runSeconds,
            "sent": Double(end.sent), "delivered": Double(delivered),
            "deliveries_per_second": Double(delivered) / runSeconds,
            "disconnected": Double(end.disconnected),
        ]
        if mode == .fanout || mode == .echo {
            result["lost"] = Double(max(expected - end.received, 0))
            result["latency_p50_ms"] = Double(histogram.percentile(50)) / 1000
            result["latency_p90_ms"] = Double(histogram.percentile(90)) / 1000
            result["latency_p99_ms"] = Double(histogram.percentile(99)) / 1000
            result["latency_max_ms"] = Double(histogram.max) / 1000
        }
        if mode == .echo { result["round_trips_per_second"] = Double(end.sent) / runSeconds }
        if mode == .churn { result["connections_per_second"] = Double(end.churned) / runSeconds }
        if let before = rss.0, let after = rss.1, connections > 0 {
            result["server_rss_mib"] = Double(after) / 1_048_576
            result["server_rss_bytes_per_connection"] = Double(after - before) / Double(connections)
        }
        if let start = cpu.0, let stop = cpu.1 {
            result["server_cpu_seconds"] = Double(stop - start) / 1e6
            if delivered > 0 { result["server_cpu_us_per_delivery"] = Double(stop - start) / Double(delivered) }
            if mode == .churn, end.churned > 0 {
                result["server_cpu_us_per_connection"] = Double(stop - start) / Double(end.churned)
            }
        }
        if let start = generatorCPU.0, let stop = generatorCPU.1, delivered > 0 {
            result["generator_cpu_us_per_delivery"] = Double(stop - start) / Double(delivered)
        }
        if let start = redisCPU.0, let stop = redisCPU.1 {
            result["redis_cpu_seconds"] = Double(stop - start) / 1e6
            if end.sent > atGo.sent {
                result["redis_cpu_us_per_publication"] = Double(stop - start) / Double(end.sent - atGo.sent)
            }
        }
        print("\n\(mode.rawValue) results")
        for key in result.keys.sorted() {
            print(
                "  \(key.padding(toLength: 34, withPad: " ", startingAt: 0)) \(String(format: "%.3f", result[key] ?? 0))"
            )
        }
        if let error = end.lastError, end.connectFailures > 0 { print("  last connect error: \(error)") }
        var json = result.mapValues { $0 as Any }
        json["mode"] = mode.rawValue
        if let data = try? JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]) {
            print(String(decoding: data, as: UTF8.self))
        }
    }
}
