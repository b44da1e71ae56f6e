import Foundation
import Logging
import ServiceLifecycle
import SwitchboardCore
import SwitchboardNIO

/// Starts a server, prints where it listens (scripts wait for this line), and serves until SIGINT or
/// SIGTERM, which drain it; returns normally so the process exits 0.
func runServer(_ options: TransportOptions, path: String?, application: any SwitchboardApplication) async throws {
    let level = Logger.Level(rawValue: options.logLevel) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
    let logger = Logger(label: "switchboard")
    let server = SwitchboardServer(
        configuration: options.configuration(path: path), application: application, logger: logger)
    let address = try await server.start()
    print("switchboard listening on ws://\(options.host):\(address.port ?? options.port)\(path ?? "/")")
    fflush(nil)
    let group = ServiceGroup(
        configuration: .init(
            services: [.init(service: server)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
}
