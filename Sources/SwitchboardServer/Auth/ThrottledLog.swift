import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Logs at most once per interval per client address, so a bot retrying bad tokens cannot flood the log.
final class ThrottledLog: Sendable {
    private let interval: TimeAmount
    private let logger: Logger
    // Lock: guards when each address was last logged.
    private let last = NIOLockedValueBox<[String: NIODeadline]>([:])
    private static let maxAddresses = 10_000

    init(interval: TimeAmount, logger: Logger) {
        self.interval = interval
        self.logger = logger
    }

    func warning(_ message: Logger.Message, address: SocketAddress?, metadata: Logger.Metadata) {
        let key = address?.ipAddress ?? "unknown"
        let now = NIODeadline.now()
        let due = last.withLockedValue { last -> Bool in
            if let previous = last[key], previous + interval > now { return false }
            if last.count >= Self.maxAddresses {
                last = last.filter { $0.value + interval > now }
                if last.count >= Self.maxAddresses { last.removeAll() }
            }
            last[key] = now
            return true
        }
        guard due else { return }
        var metadata = metadata
        metadata["address"] = "\(key)"
        logger.warning(message, metadata: metadata)
    }
}
