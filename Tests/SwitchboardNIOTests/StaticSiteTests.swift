import Foundation
import Logging
import NIOCore
import SwitchboardCore
import SwitchboardNIO
import SwitchboardTestSupport
import Testing

/// The pages served beside the WebSocket endpoint: content types, revalidation, and nothing outside the
/// files loaded, whatever the path says.
@Suite("Static site", .timeLimit(.minutes(5)))
struct StaticSiteTests {
    private func start() async throws -> (WebSocketServer, Int) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try "<h1>hi</h1>".write(to: directory.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
        try "export const x = 1;".write(
            to: directory.appendingPathComponent("app.js"), atomically: true, encoding: .utf8)
        try "body{}".write(to: directory.appendingPathComponent("style.css"), atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(
            at: directory.appendingPathComponent("private"), withIntermediateDirectories: true)
        try "secret".write(to: directory.appendingPathComponent("private/key"), atomically: true, encoding: .utf8)
        var configuration = SwitchboardConfiguration()
        configuration.port = 0
        configuration.threads = 1
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let server = WebSocketServer(
            configuration: configuration, application: EchoApplication(broadcast: false),
            site: try StaticSite(
                directory: directory, aliases: ["/": "index.html"],
                generated: ["/config.json": ("config.json", #"{"path":"/ws"}"#)]),
            logger: logger)
        return (server, try await server.start().port ?? 0)
    }

    private func get(_ path: String, port: Int, method: String = "GET", extra: String = "") async throws -> String {
        try await exchange("\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\(extra)\r\n", port: port)
    }

    @Test func servesFilesWithTypesAndRevalidation() async throws {
        let (server, port) = try await start()
        try await finally({ await server.shutdown() }) {
            let page = try await get("/", port: port)
            #expect(page.hasPrefix("HTTP/1.1 200 OK"))
            #expect(page.contains("Content-Type: text/html; charset=utf-8"))
            #expect(page.contains("Cache-Control: no-cache"))
            // Not to be framed by another site, nor sniffed into another type.
            #expect(page.contains("X-Frame-Options: DENY"))
            #expect(page.contains("Content-Security-Policy: frame-ancestors 'none'"))
            #expect(page.contains("X-Content-Type-Options: nosniff"))
            #expect(page.hasSuffix("<h1>hi</h1>"))
            #expect(try await get("/app.js?v=2", port: port).contains("Content-Type: text/javascript; charset=utf-8"))
            #expect(try await get("/style.css", port: port).contains("Content-Type: text/css; charset=utf-8"))
            let generated = try await get("/config.json", port: port)
            #expect(generated.contains("Content-Type: application/json") && generated.hasSuffix(#"{"path":"/ws"}"#))
            let etag = try #require(
                page.split(separator: "\r\n").first { $0.hasPrefix("ETag: ") }.map { String($0.dropFirst(6)) })
            let revalidated = try await get("/", port: port, extra: "If-None-Match: \(etag)\r\n")
            #expect(revalidated.hasPrefix("HTTP/1.1 304 Not Modified"))
            #expect(!revalidated.contains("<h1>"))
            let head = try await get("/index.html", port: port, method: "HEAD")
            #expect(head.contains("Content-Length: 11") && !head.contains("<h1>"))
        }
    }

    @Test(
        "nothing outside the loaded files",
        arguments: [
            "/../Package.swift", "/%2e%2e/%2e%2e/etc/passwd", "/private/key", "/private", "//etc/passwd",
            "/index.html/..", "/nope",
        ])
    func traversalIsNotFound(path: String) async throws {
        let (server, port) = try await start()
        try await finally({ await server.shutdown() }) {
            let answer = try await get(path, port: port)
            #expect(answer.hasPrefix("HTTP/1.1 404 Not Found"), "\(path): \(answer)")
            #expect(!answer.contains("secret"))
        }
    }

    @Test func otherMethodsAndTheWebSocketPathKeepTheirAnswers() async throws {
        let (server, port) = try await start()
        try await finally({ await server.shutdown() }) {
            #expect(try await get("/", port: port, method: "POST").hasPrefix("HTTP/1.1 405"))
            // The WebSocket path answers a plain request as before (426), and upgrades.
            #expect(try await get("/ws", port: port).hasPrefix("HTTP/1.1 426"))
            let upgraded = try await RawConnection.connect(port: port)
            upgraded.send(upgradeRequest(path: "/ws"))
            try await eventually { upgraded.receivedText.contains("101 Switching Protocols") }
            await upgraded.close()
        }
    }
}
