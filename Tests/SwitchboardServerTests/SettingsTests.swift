import Foundation
import Logging
import NIOCore
import NIOPosix
import SwitchboardClient
import SwitchboardConfig
import SwitchboardCore
import SwitchboardNIO
import SwitchboardServer
import SwitchboardTestSupport
import Testing

private func temporaryFile(_ name: String, _ text: String) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(UUID().uuidString)-\(name)").path
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

private func expectError(_ contains: String, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected an error containing \(contains)")
    } catch {
        #expect("\(error)".contains(contains), "\(error)")
    }
}

@Suite("Layered settings", .timeLimit(.minutes(5)))
struct SettingsTests {
    static let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs")
        .standardized

    @Test func flagsOverEnvironmentOverFileOverDefaults() throws {
        let file = try temporaryFile("s.json", #"{"port": 1001, "pingInterval": 7}"#)
        let env = ["SWITCHBOARD_PORT": "1002", "SWITCHBOARD_CONFIG": file]
        let all = try SettingsLoader.load(arguments: ["--port", "1003"], environment: env)
        #expect(all.settings.transport.port == 1003)
        #expect(all.entries.first { $0.key == "port" }?.source == "flag --port")
        let noFlag = try SettingsLoader.load(arguments: [], environment: env)
        #expect(noFlag.settings.transport.port == 1002)
        #expect(noFlag.entries.first { $0.key == "port" }?.source == "environment SWITCHBOARD_PORT")
        #expect(noFlag.settings.transport.pingInterval == .seconds(7))
        #expect(noFlag.entries.first { $0.key == "pingInterval" }?.source == "file \(file): pingInterval")
        let fileOnly = try SettingsLoader.load(arguments: ["--config", file], environment: [:])
        #expect(fileOnly.settings.transport.port == 1001)
        let defaults = try SettingsLoader.load(arguments: [], environment: [:])
        #expect(defaults.settings.transport.port == 8080)
        #expect(defaults.entries.allSatisfy { $0.source == "default" })
    }

    @Test func streamPathsDefaultTurnOffWhenEmptyAndMustBePaths() throws {
        let defaults = try SettingsLoader.load(arguments: [], environment: [:]).settings.transport
        #expect(defaults.eventStreamPath == "/sse" && defaults.httpStreamPath == "/http-stream")
        let off = try SettingsLoader.load(
            arguments: ["--sse-path", ""], environment: ["SWITCHBOARD_HTTP_STREAM_PATH": ""]
        ).settings.transport
        #expect(off.eventStreamPath == nil && off.httpStreamPath == nil)
        for arguments in [
            ["--sse-path", "sse"], ["--sse-path", "/ws"], ["--sse-path", "/x", "--http-stream-path", "/x"],
        ] {
            #expect(throws: SettingsError.self, "\(arguments)") {
                try SettingsLoader.load(arguments: arguments, environment: [:])
            }
        }
    }

    @Test func everyKindReadsFromEveryLayer() throws {
        let loaded = try SettingsLoader.load(
            arguments: [
                "--deflate", "--allowed-origins", "https://a.example", "--allowed-origins", "https://b.example",
            ],
            environment: ["SWITCHBOARD_PUBLISH_RATE": "2.5", "SWITCHBOARD_SLOW_CONSUMER": "latest"])
        #expect(loaded.settings.transport.deflate == DeflateOptions())
        #expect(loaded.settings.transport.originPolicy == .allowList(["https://a.example", "https://b.example"]))
        #expect(loaded.settings.channels.publishRate == 2.5)
        #expect(loaded.settings.transport.slowConsumerPolicy == .latest)
    }

    @Test func mistakesNameTheirSource() throws {
        let typo = try temporaryFile("t.json", #"{"pingIntervall": 3}"#)
        expectError("\(typo): pingIntervall: unknown key (did you mean pingInterval?)") {
            _ = try SettingsLoader.load(arguments: [], environment: [:], file: typo)
        }
        let wrongType = try temporaryFile("w.json", #"{"port": "eighty"}"#)
        expectError("\(wrongType): port: must be an integer") {
            _ = try SettingsLoader.load(arguments: [], environment: [:], file: wrongType)
        }
        let badNamespace = try temporaryFile("n.yaml", "namespaces:\n  chat: {presense: true}\n")
        expectError("namespaces.chat.presense: unknown key") {
            _ = try SettingsLoader.load(arguments: [], environment: [:], file: badNamespace)
        }
        expectError("unknown option --prot (did you mean port?)") {
            _ = try SettingsLoader.load(arguments: ["--prot", "1"], environment: [:])
        }
        expectError("environment SWITCHBOARD_PORT: must be an integer") {
            _ = try SettingsLoader.load(arguments: [], environment: ["SWITCHBOARD_PORT": "x"])
        }
        expectError("flag --max-message-size: must be an integer") {
            _ = try SettingsLoader.load(arguments: ["--max-message-size", "big"], environment: [:])
        }
        // The backend's settings: what each needs, and what would decide twice.
        let proxied = try temporaryFile(
            "p.json", #"{"namespaces": {"": {}, "vip": {"proxySubscribe": true}, "log": {"publicationEvents": true}}}"#)
        expectError("namespace \"log\" has publicationEvents, but eventsUrl is not set") {
            _ = try SettingsLoader.load(
                arguments: ["--proxy-subscribe-url", "http://127.0.0.1:9/s"], environment: [:], file: proxied)
        }
        let vip = try temporaryFile("v.json", #"{"namespaces": {"": {}, "vip": {"proxySubscribe": true}}}"#)
        expectError("namespace \"vip\" has proxySubscribe, but proxySubscribeUrl is not set") {
            _ = try SettingsLoader.load(arguments: [], environment: [:], file: vip)
        }
        expectError("proxyRpcUrl: must be an http:// or https:// URL") {
            _ = try SettingsLoader.load(arguments: ["--proxy-rpc-url", "ftp://x/y"], environment: [:])
        }
        expectError("proxyRefreshUrl renews connections the connect proxy made") {
            _ = try SettingsLoader.load(arguments: ["--proxy-refresh-url", "http://127.0.0.1:9/r"], environment: [:])
        }
        expectError("proxyHeaders: \"Bad Header\" is not a header name") {
            _ = try SettingsLoader.load(arguments: ["--proxy-headers", "Bad Header"], environment: [:])
        }
        expectError("proxyHeaders: Content-Length frames the request to the backend") {
            _ = try SettingsLoader.load(arguments: ["--proxy-headers", "Content-Length"], environment: [:])
        }
        expectError("proxyTimeout: must be shorter than handshakeTimeout") {
            _ = try SettingsLoader.load(
                arguments: ["--proxy-connect-url", "http://127.0.0.1:9/c", "--proxy-timeout", "10"], environment: [:])
        }
        expectError("insecureUserFromQuery and proxyConnectUrl both decide who connects") {
            _ = try SettingsLoader.load(
                arguments: ["--proxy-connect-url", "http://127.0.0.1:9/c", "--insecure-user-from-query", "true"],
                environment: [:])
        }
        expectError("eventsSecret: needed with eventsUrl, at least 16 bytes") {
            _ = try SettingsLoader.load(
                arguments: ["--events-url", "http://127.0.0.1:9/e", "--events-secret", "short"], environment: [:])
        }
        expectError("eventsBatchSize: only used with eventsUrl") {
            _ = try SettingsLoader.load(arguments: ["--events-batch-size", "5"], environment: [:])
        }
        let demoOff = try SettingsLoader.load(
            arguments: ["--proxy-connect-url", "http://127.0.0.1:9/c"], environment: [:])
        #expect(!demoOff.settings.insecureUserFromQuery, "the backend decides who connects, not ?user=")
        expectError("port: must be within 0…65535") {
            _ = try SettingsLoader.load(arguments: ["--port", "70000"], environment: [:])
        }
        expectError("deflateLevel: must be within 1…9") {
            _ = try SettingsLoader.load(arguments: ["--deflate-level", "10"], environment: [:])
        }
        expectError("deflateMinSize: must be within") {
            _ = try SettingsLoader.load(arguments: [], environment: ["SWITCHBOARD_DEFLATE_MIN_SIZE": "-1"])
        }
        expectError("tlsCertificate and tlsKey go together") {
            _ = try SettingsLoader.load(arguments: ["--tls-certificate", "/x.pem"], environment: [:])
        }
        let unknownVariable = try SettingsLoader.load(arguments: [], environment: ["SWITCHBOARD_PINGINTERVAL": "3"])
        #expect(unknownVariable.warnings == ["environment variable SWITCHBOARD_PINGINTERVAL is not a setting; ignored"])
    }

    @Test func reportRedactsSecretsAndNamesSources() throws {
        let secret = "a-secret-of-at-least-thirty-two-bytes!!"
        let loaded = try SettingsLoader.load(
            arguments: ["--api-key", "an-api-key-long-enough"], environment: ["SWITCHBOARD_TOKEN_SECRET": secret])
        let report = SettingsReport.render(loaded)
        #expect(!report.contains(secret) && !report.contains("an-api-key-long-enough"))
        let lines = report.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
        #expect(lines.contains(["tokenSecret", "<redacted>", "environment", "SWITCHBOARD_TOKEN_SECRET"]))
        #expect(lines.contains(["apiKey", "<redacted>", "flag", "--api-key"]))
        #expect(loaded.settings.tokenSecrets == [secret])
    }

    @Test func exampleFileParses() throws {
        let loaded = try SettingsLoader.load(
            arguments: [], environment: [:], file: Self.docs.appendingPathComponent("switchboard.example.yaml").path)
        #expect(loaded.settings.transport.maxMessageSize == 65536)
        #expect(loaded.settings.transport.abuseLimits.maxConnectionsPerUser == 10)
        // `sys`: the server's own, added to the file's namespaces.
        #expect(Set(loaded.settings.channels.namespaces.keys) == ["", "chat", "prices", "sys"])
        #expect(loaded.entries.filter { $0.source != "default" }.count >= 15)
    }

    @Test func configurationGuideListsEverySettingAsTheCodeDoes() throws {
        let text = try String(contentsOf: Self.docs.appendingPathComponent("CONFIGURATION.md"), encoding: .utf8)
        #expect(
            text.contains(SettingsReport.markdownTable),
            "docs/CONFIGURATION.md should contain:\n\(SettingsReport.markdownTable)")
    }

    /// A reload applies origins and namespaces to a running server; one that does not validate changes nothing.
    @Test func reloadAppliesAndABadReloadKeepsTheRunningConfiguration() async throws {
        let file = try temporaryFile(
            "r.json", #"{"allowedOrigins": ["https://old.example"], "namespaces": {"": {}, "chat": {}}}"#)
        let arguments = ["--port", "0", "--config", file, "--threads", "1"]
        let loaded = try SettingsLoader.load(arguments: arguments, environment: [:])
        let application = ChannelsApplication(configuration: loaded.settings.channels)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let server = WebSocketServer(
            configuration: loaded.settings.transport, application: application, logger: logger)
        let port = try await server.start().port ?? 0
        try await finally({ await server.shutdown() }) {
            let reload = SettingsReload(
                arguments: arguments, environment: [:], loaded: loaded, application: application, verifier: nil,
                logger: logger)

            func upgradeStatus(origin: String) async throws -> Int {
                var options = ClientOptions(path: "/ws")
                options.headers = [("Origin", origin)]
                do {
                    let client = try await WebSocketClient.connect(
                        host: "127.0.0.1", port: port, options: options, group: MultiThreadedEventLoopGroup.singleton)
                    await client.disconnect()
                    return 101
                } catch let failure as HandshakeFailure {
                    return failure.status
                }
            }
            #expect(try await upgradeStatus(origin: "https://old.example") == 101)
            #expect(try await upgradeStatus(origin: "https://new.example") == 403)

            try #"{"allowedOrigins": ["https://new.example"], "namespaces": {"": {}, "news": {}}}"#.write(
                toFile: file, atomically: true, encoding: .utf8)
            #expect(await reload.reload(hub: server.hub))
            #expect(try await upgradeStatus(origin: "https://new.example") == 101)
            #expect(try await upgradeStatus(origin: "https://old.example") == 403)
            #expect(Set(application.configuration.namespaces.keys) == ["", "news", "sys"])

            try #"{"allowedOrigins": ["https://third.example"], "namespaces": {"": {}, "x": {"historySize": -1}}}"#
                .write(
                    toFile: file, atomically: true, encoding: .utf8)
            #expect(await !reload.reload(hub: server.hub))
            #expect(try await upgradeStatus(origin: "https://new.example") == 101)
            #expect(try await upgradeStatus(origin: "https://third.example") == 403)
            #expect(Set(application.configuration.namespaces.keys) == ["", "news", "sys"])

            // A namespace that would need the subscribe proxy, which this server started without: refused, even
            // though the file now names a URL (the proxy's URLs take a restart).
            try #"""
            {"proxySubscribeUrl": "http://127.0.0.1:9/s", "namespaces": {"": {}, "vip": {"proxySubscribe": true}}}
            """#.write(toFile: file, atomically: true, encoding: .utf8)
            #expect(await !reload.reload(hub: server.hub))
            #expect(Set(application.configuration.namespaces.keys) == ["", "news", "sys"])
            #expect(reload.settings.entries.first { $0.key == "allowedOrigins" }?.value == "https://new.example")
        }
    }
}
