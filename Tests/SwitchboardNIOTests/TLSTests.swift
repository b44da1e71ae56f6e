import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import SwitchboardClient
import SwitchboardCore
import SwitchboardTestSupport
import Testing

@testable import SwitchboardNIO

@Suite("TLS", .serialized, .timeLimit(.minutes(5)))
struct TLSTests {
    private func start(_ pki: TestPKI) async throws -> (WebSocketServer, Int, TLSCertificates) {
        let certificates = try TLSCertificates(certificatePath: pki.path("live.pem"), keyPath: pki.path("live.key"))
        var configuration = SwitchboardConfiguration()
        configuration.port = 0
        configuration.threads = 1
        configuration.handshakeTimeout = .seconds(2)
        configuration.shutdownTimeout = .seconds(2)
        var logger = Logger(label: "tls-test")
        logger.logLevel = .critical
        let server = WebSocketServer(
            configuration: configuration, application: EchoApplication(broadcast: false), tls: certificates,
            logger: logger)
        let address = try await server.start()
        return (server, address.port ?? 0, certificates)
    }

    /// A server with a valid certificate from the CA "ca".
    private func startSignedByCA() async throws -> (TestPKI, WebSocketServer, Int) {
        let pki = try TestPKI()
        try pki.authority("ca")
        try pki.server("srv", signedBy: "ca")
        try pki.install("srv")
        let (server, port, _) = try await start(pki)
        return (pki, server, port)
    }

    private func connect(_ port: Int, trusting context: NIOSSLContext) async throws -> WebSocketClient {
        var options = ClientOptions(path: "/ws")
        options.tls = context
        options.serverHostname = "localhost"
        options.connectTimeout = .seconds(5)
        return try await WebSocketClient.connect(
            host: "127.0.0.1", port: port, options: options, group: MultiThreadedEventLoopGroup.singleton)
    }

    private func echoes(_ client: WebSocketClient) async throws -> Bool {
        client.send(text: "over tls")
        guard case .text(let text) = try await client.nextMessage() else { return false }
        return text == "over tls"
    }

    @Test func wssEchoesAndReloadsTheCertificate() async throws {
        let pki = try TestPKI()
        try pki.authority("ca1")
        try pki.authority("ca2")
        try pki.server("first", signedBy: "ca1")
        try pki.server("second", signedBy: "ca2")
        try pki.install("first")
        let (server, port, certificates) = try await start(pki)
        try await finally({ await server.shutdown() }) {

            let before = try await connect(port, trusting: try pki.trusting("ca1"))
            #expect(try await echoes(before))
            await #expect(throws: (any Error).self) { _ = try await connect(port, trusting: try pki.trusting("ca2")) }

            try pki.install("second")
            try certificates.reload()
            let after = try await connect(port, trusting: try pki.trusting("ca2"))
            #expect(try await echoes(after))
            // The connection made before the reload keeps its session.
            #expect(try await echoes(before))

            // A bad file at reload keeps the certificate in use.
            try "not a certificate".write(toFile: pki.path("live.pem"), atomically: true, encoding: .utf8)
            #expect(throws: TLSFileError.self) { try certificates.reload() }
            #expect(try await echoes(try await connect(port, trusting: try pki.trusting("ca2"))))
        }
    }

    @Test func expiredAndSelfSignedCertificatesAreRefusedByAVerifyingClient() async throws {
        let pki = try TestPKI()
        try pki.authority("ca")
        try pki.server("expired", signedBy: "ca", days: 0)
        try pki.server("self", signedBy: nil)
        for name in ["expired", "self"] {
            try pki.install(name)
            let (server, port, _) = try await start(pki)
            await #expect(throws: (any Error).self, "\(name)") {
                _ = try await connect(port, trusting: try pki.trusting("ca"))
            }
            await server.shutdown()
        }
    }

    @Test func aBadCertificateFileStopsTheStartWithItsPath() throws {
        let pki = try TestPKI()
        try "garbage".write(toFile: pki.path("live.pem"), atomically: true, encoding: .utf8)
        try "garbage".write(toFile: pki.path("live.key"), atomically: true, encoding: .utf8)
        #expect {
            _ = try TLSCertificates(certificatePath: pki.path("live.pem"), keyPath: pki.path("live.key"))
        } throws: { error in
            (error as? TLSFileError)?.path == pki.path("live.pem")
        }
    }

    /// Plain HTTP to the TLS port: the server ends the connection instead of waiting.
    @Test func plaintextToTheTLSPortIsDropped() async throws {
        let (pki, server, port) = try await startSignedByCA()
        try await finally({ await server.shutdown() }) {
            let started = ContinuousClock.now  // before connecting: the server's handshake timer starts at its accept
            let plain = try await RawConnection.connect(port: port)
            plain.send("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            let answer = try await plain.waitForServerClose(timeout: .seconds(20))
            // Closed on the bytes themselves, well before the 2 s handshake timeout, and never answered in HTTP.
            #expect(ContinuousClock.now - started < .milliseconds(1500))
            #expect(!answer.hasPrefix("HTTP/"), "\(answer)")
            // And it still serves TLS afterwards.
            #expect(try await echoes(try await connect(port, trusting: try pki.trusting("ca"))))
        }
    }

    /// TCP opened and no ClientHello: dropped at the handshake timeout (2 s here), like a silent plain client.
    @Test func aSilentClientIsDroppedAtTheHandshakeTimeout() async throws {
        let (_, server, port) = try await startSignedByCA()
        try await finally({ await server.shutdown() }) {
            let started = ContinuousClock.now  // before connecting: the server's timer starts at its accept
            let silent = try await RawConnection.connect(port: port)
            _ = try await silent.waitForServerClose(timeout: .seconds(20))
            // At the 2 s configured, not at the 10 s default.
            let waited = ContinuousClock.now - started
            #expect(waited >= .seconds(2) && waited < .seconds(6), "\(waited)")
            #expect(!silent.isActive)
        }
    }
}
