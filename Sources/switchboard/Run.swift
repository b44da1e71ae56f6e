import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import SwitchboardCore
import SwitchboardNIO

/// Serves until SIGINT or SIGTERM, which drain the server; returns normally so the process exits 0.
/// The ready line ("switchboard listening on …", which scripts wait for) is printed only once the
/// signal handlers are in place, so a signal sent after it always means a graceful shutdown.
func runServer(_ options: TransportOptions, path: String?, application: any SwitchboardApplication) async throws {
    let level = Logger.Level(rawValue: options.logLevel) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
    let logger = Logger(label: "switchboard")
    let server = WebSocketServer(
        configuration: options.configuration(path: path), application: application, logger: logger)
    let announced = AnnouncingServer(server: server) { address in
        print("switchboard listening on ws://\(options.host):\(address.port ?? options.port)\(path ?? "/")")
        fflush(nil)
    }
    let group = ServiceGroup(
        configuration: .init(
            services: [.init(service: announced)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
}

/// Starts the server inside the service group, then announces where it listens.
private struct AnnouncingServer: Service {
    let server: WebSocketServer
    let announce: @Sendable (SocketAddress) -> Void

    func run() async throws {
        announce(try await server.start())
        try await server.run()
    }
}
