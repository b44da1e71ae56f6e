import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Logs at most once per interval per client address (or other key), so a bot retrying bad tokens, or a
/// backend that is down for every request, cannot flood the log.
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
        var metadata = metadata
        metadata["address"] = "\(key)"
        warning(message, key: key, metadata: metadata)
    }

    /// Logs at most once per interval per `key` (an address, or an event and its outcome).
    func warning(_ message: Logger.Message, key: String, metadata: Logger.Metadata) {
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
        logger.warning(message, metadata: metadata)
    }
}
