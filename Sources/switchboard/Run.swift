import ArgumentParser
import Atomics
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import Prometheus
import ServiceLifecycle
import SwitchboardConfig
import SwitchboardCore
import SwitchboardNIO
import SwitchboardServer

/// Sets up logging at `logLevel` and Prometheus as the swift-metrics backend (what `/metrics`
/// shows). Call once, before making anything that logs or counts.
func bootstrap(logLevel: String) -> PrometheusCollectorRegistry {
    let level = Logger.Level(rawValue: logLevel) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
    let registry = PrometheusCollectorRegistry()
    var factory = PrometheusMetricsFactory(registry: registry)
    // Delivery and handshakes take microseconds to milliseconds on one host: the default buckets start at 5 ms.
    factory.defaultDurationHistogramBuckets = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
        .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5),
    ]
    factory.defaultValueHistogramBuckets = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    MetricsSystem.bootstrap(factory)
    return registry
}

/// Serves until SIGINT or SIGTERM, which drain the server; returns normally so the process exits 0.
/// The ready line ("switchboard listening on …", which scripts wait for) is printed only once the
/// signal handlers are in place, so a signal sent after it always means a graceful shutdown.
/// `alongside` makes services that run beside the WebSocket server (the HTTP API) and stop after it has
/// drained, given whether the server takes connections (false while starting and draining).
func runServer(
    _ settings: ServeSettings, path: String?, application: any SwitchboardApplication, site: StaticSite? = nil,
    reload: SettingsReload? = nil, started: @escaping @Sendable () -> Void = {},
    alongside: (_ ready: @escaping @Sendable () -> Bool) throws -> [any Service] = { _ in [] }
) async throws {
    let logger = Logger(label: "switchboard")
    var tls: TLSCertificates?
    if let certificate = settings.tlsCertificate, let key = settings.tlsKey {
        do {
            tls = try TLSCertificates(certificatePath: certificate, keyPath: key)
        } catch {
            throw ValidationError("TLS: \(error)")
        }
    }
    var configuration = settings.transport
    configuration.path = path
    let server = WebSocketServer(
        configuration: configuration, application: application, tls: tls, site: site, logger: logger)
    let hangup = HangupHandler(certificates: tls, settings: reload, hub: server.hub, logger: logger)
    defer { hangup.cancel() }
    let options = (host: configuration.host, port: configuration.port)
    let secure = tls != nil
    let hasSite = site != nil
    let isStarted = ManagedAtomic(false)
    let others = try alongside { isStarted.load(ordering: .relaxed) && !server.hub.isShuttingDown }
    let announced = AnnouncingServer(server: server, ready: isStarted) { address in
        let scheme = secure ? "wss" : "ws"
        print("switchboard listening on \(scheme)://\(options.host):\(address.port ?? options.port)\(path ?? "/")")
        if hasSite {
            let base = "http\(secure ? "s" : "")://\(options.host):\(address.port ?? options.port)"
            print("chat demo on \(base)/ and the live dashboard on \(base)/dashboard")
        }
        fflush(nil)
        started()
    }
    // Services stop in reverse order: the WebSocket server drains first, while the API still answers
    // (`/ready` false).
    let services =
        others.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) } + [
            .init(service: announced)
        ]
    let group = ServiceGroup(
        configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
}

/// Starts the server inside the service group, then announces where it listens.
private struct AnnouncingServer: Service {
    let server: WebSocketServer
    let ready: ManagedAtomic<Bool>
    let announce: @Sendable (SocketAddress) -> Void

    func run() async throws {
        let address: SocketAddress
        do {
            address = try await server.start()
        } catch {
            let configuration = server.configuration
            throw ListenFailure(
                "the WebSocket listener", host: configuration.host, port: configuration.port, error: error,
                hint: "set port (--port) to a free port, or 0 for any")
        }
        ready.store(true, ordering: .relaxed)
        announce(address)
        try await server.run()
    }
}

/// On SIGHUP: reloads the certificate and key (a bad file keeps the certificate in use and logs why), then
/// the settings (a configuration that does not validate keeps the running one).
private final class HangupHandler {
    private let source: any DispatchSourceSignal

    init(certificates: TLSCertificates?, settings: SettingsReload?, hub: Hub, logger: Logger) {
        signal(SIGHUP, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: DispatchQueue(label: "switchboard.sighup"))
        // Lock: guards the last reload started; each waits for the one before, so a quick second SIGHUP
        // cannot be overtaken by the first and leave older settings in force.
        let last = NIOLockedValueBox<Task<Void, Never>?>(nil)
        source.setEventHandler {
            if let certificates {
                do {
                    try certificates.reload()
                    logger.info(
                        "TLS certificate reloaded", metadata: ["certificate": "\(certificates.certificatePath)"])
                } catch {
                    logger.error("TLS reload failed; keeping the certificate in use", metadata: ["error": "\(error)"])
                }
            }
            guard let settings else { return }
            last.withLockedValue { last in
                let before = last
                last = Task {
                    await before?.value
                    await settings.reload(hub: hub)
                }
            }
        }
        source.resume()
    }

    func cancel() { source.cancel() }
}
