import ArgumentParser
import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// The options `serve` and `echo` share: where to listen, limits, heartbeats, queue bounds, shutdown.
struct TransportOptions: ParsableArguments {
    @Option(help: "Address to bind.")
    var host = "127.0.0.1"

    @Option(help: "TCP port (0 picks a free one).")
    var port = 8080

    @Option(help: "Event loop threads (one registry shard each). Default: one per core.")
    var threads = System.coreCount

    @Option(help: "Largest message a client may send, in bytes, all fragments together (past it: close 1009).")
    var maxMessageSize = 1 << 20

    @Option(help: "Open connections allowed at once; further upgrades get HTTP 503.")
    var maxConnections = 100_000

    @Option(help: "Seconds a client has to complete the HTTP upgrade after connecting.")
    var handshakeTimeout = 10.0

    @Option(
        help: ArgumentHelp(
            "A web origin allowed to connect (repeatable; `*` for any). Default: only the server's own origin.",
            discussion: "Requests without an Origin header (clients that are not browsers) are not affected.",
            valueName: "origin"))
    var allowedOrigin: [String] = []

    @Option(help: "Handshakes in progress allowed at once; connections beyond are closed at accept.")
    var maxPendingHandshakes = 4096

    @Option(help: "New upgrades admitted per second (beyond: HTTP 503 with Retry-After); 0 admits all.")
    var maxUpgradesPerSecond = 0.0

    @Option(help: "Seconds between server pings (jittered ±10%); 0 disables pings.")
    var pingInterval = 25.0

    @Option(help: "Seconds a ping may go unanswered before the connection is closed.")
    var pongTimeout = 10.0

    @Option(help: "Close connections that send no data message for this many seconds; 0 disables.")
    var idleTimeout = 0.0

    @Option(help: "Seconds to wait for the client's close frame after sending ours.")
    var closeTimeout = 5.0

    @Option(help: "Bytes of messages queued per connection while its socket is not writable.")
    var queueMaxBytes = 1 << 20

    @Option(help: "Messages queued per connection while its socket is not writable.")
    var queueMaxMessages = 4096

    @Option(
        help:
            "When a connection's queue is full: disconnect (close 1008), drop-oldest, or latest (only the newest pending message of each channel)."
    )
    var slowConsumer = SlowConsumerPolicy.disconnect

    @Option(help: "Seconds shutdown waits for queues to drain and close handshakes to finish.")
    var shutdownTimeout = 10.0

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    @Option(help: "PEM certificate chain for wss:// (with --tls-key); reloaded on SIGHUP.")
    var tlsCertificate: String?

    @Option(help: "PEM private key for wss:// (with --tls-certificate).")
    var tlsKey: String?

    @Flag(help: "Negotiate permessage-deflate (RFC 7692) with clients that offer it.")
    var deflate = false

    @Option(help: "Messages smaller than this many bytes go out uncompressed (with --deflate).")
    var deflateMinSize = 256

    @Option(help: "zlib level for outgoing messages, 1 (fastest) to 9 (smallest) (with --deflate).")
    var deflateLevel = 1

    @Flag(help: "Let clients keep their compression context between messages (costs ~40 KiB per such connection).")
    var deflateClientContextTakeover = false

    func validate() throws {
        guard (1...9).contains(deflateLevel) else { throw ValidationError("--deflate-level must be 1…9") }
        guard deflateMinSize >= 0 else { throw ValidationError("--deflate-min-size cannot be negative") }
        guard (1...65535).contains(port) || port == 0 else { throw ValidationError("--port must be 0…65535") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard maxMessageSize >= 1 else { throw ValidationError("--max-message-size must be positive") }
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be positive") }
        guard maxPendingHandshakes >= 1 else { throw ValidationError("--max-pending-handshakes must be positive") }
        guard maxUpgradesPerSecond >= 0 else { throw ValidationError("--max-upgrades-per-second cannot be negative") }
        guard queueMaxBytes >= 1, queueMaxMessages >= 1 else { throw ValidationError("queue bounds must be positive") }
        for (name, value) in [
            ("--handshake-timeout", handshakeTimeout), ("--pong-timeout", pongTimeout),
            ("--close-timeout", closeTimeout),
            ("--shutdown-timeout", shutdownTimeout),
        ] where !(value > 0) {
            throw ValidationError("\(name) must be positive")
        }
        guard pingInterval >= 0, idleTimeout >= 0 else { throw ValidationError("intervals cannot be negative") }
        guard (tlsCertificate == nil) == (tlsKey == nil) else {
            throw ValidationError("--tls-certificate and --tls-key go together")
        }
    }

    /// The certificate and key, when TLS is configured; a bad file stops the server with its path and why.
    func certificates() throws -> TLSCertificates? {
        guard let tlsCertificate, let tlsKey else { return nil }
        do {
            return try TLSCertificates(certificatePath: tlsCertificate, keyPath: tlsKey)
        } catch {
            throw ValidationError("TLS: \(error)")
        }
    }

    func configuration(path: String?) -> SwitchboardConfiguration {
        var configuration = SwitchboardConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.path = path
        configuration.threads = threads
        configuration.maxMessageSize = maxMessageSize
        configuration.maxConnections = maxConnections
        configuration.handshakeTimeout = .seconds(handshakeTimeout)
        configuration.maxPendingHandshakes = maxPendingHandshakes
        if allowedOrigin.contains("*") {
            configuration.originPolicy = .any
        } else if !allowedOrigin.isEmpty {
            configuration.originPolicy = .allowList(allowedOrigin)
        }
        configuration.maxUpgradesPerSecond = maxUpgradesPerSecond
        configuration.pingInterval = .seconds(pingInterval)
        configuration.pongTimeout = .seconds(pongTimeout)
        configuration.idleTimeout = .seconds(idleTimeout)
        configuration.closeTimeout = .seconds(closeTimeout)
        configuration.queueMaxBytes = queueMaxBytes
        configuration.queueMaxMessages = queueMaxMessages
        configuration.slowConsumerPolicy = slowConsumer
        configuration.shutdownTimeout = .seconds(shutdownTimeout)
        if deflate {
            configuration.deflate = DeflateOptions(
                minSize: deflateMinSize, level: deflateLevel, clientContextTakeover: deflateClientContextTakeover)
        }
        return configuration
    }
}

extension SlowConsumerPolicy: ExpressibleByArgument {}

extension TimeAmount {
    static func seconds(_ value: Double) -> TimeAmount { .nanoseconds(Int64(value * 1_000_000_000)) }
}
