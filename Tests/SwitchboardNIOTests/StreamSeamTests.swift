import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SwitchboardCore
import SwitchboardNIO
import SwitchboardTestSupport
import Testing

/// A stream's decision and a POST's answer are the application's, like an upgrade's: they may complete on
/// another event loop group, late or never. Every answer here comes from a second group.
@Suite("Stream decisions and POST answers from another event loop group", .timeLimit(.minutes(5)))
struct StreamSeamTests {
    final class RemoteApplication: SwitchboardApplication {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        /// Answers late (100 ms) or, when false, never.
        let answers: Bool

        init(answers: Bool) { self.answers = answers }

        private func later<T: Sendable>(_ value: T) -> EventLoopFuture<T> {
            let loop = group.next()
            guard answers else { return loop.makePromise(of: T.self).futureResult }
            return loop.scheduleTask(in: .milliseconds(100)) { value }.futureResult
        }

        func shouldOpenStream(
            _ request: HTTPRequestHead, transport: Transport, from remoteAddress: SocketAddress?,
            on eventLoop: any EventLoop
        ) -> EventLoopFuture<UpgradeDecision> {
            later(.accept(userID: "remote", subprotocol: nil))
        }

        func received(_ post: StreamPost, on eventLoop: any EventLoop) -> EventLoopFuture<StreamPostAnswer> {
            later(.accepted)
        }

        func connection(_ connection: any LocalConnection, received message: DataMessage) {}

        func connectionOpened(_ connection: any LocalConnection) {
            connection.send(FrameEncoder.encodeText(#"{"push":"hello"}"#), as: .reliable, flush: true)
        }
    }

    func start(_ application: RemoteApplication) async throws -> WebSocketServer {
        var configuration = SwitchboardConfiguration()
        configuration.port = 0
        configuration.threads = 2
        configuration.handshakeTimeout = .seconds(1)
        configuration.shutdownTimeout = .seconds(5)
        var logger = Logger(label: "stream-seam-test")
        logger.logLevel = .critical
        let server = WebSocketServer(configuration: configuration, application: application, logger: logger)
        _ = try await server.start()
        return server
    }

    func request(_ port: Int, _ text: String) async throws -> RawConnection {
        let raw = try await RawConnection.connect(port: port)
        raw.send(text)
        return raw
    }

    @Test func lateAnswersFromAnotherGroupOpenTheStreamAndAnswerThePost() async throws {
        let application = RemoteApplication(answers: true)
        let server = try await start(application)
        let port = server.localAddress?.port ?? 0
        try await finally({ await server.shutdown() }) {
            let stream = try await request(port, "GET /sse?channel=a HTTP/1.1\r\nHost: localhost\r\n\r\n")
            try await eventually("the stream's first event") { stream.receivedText.contains("event: hello") }
            #expect(stream.receivedText.hasPrefix("HTTP/1.1 200 OK"))
            let post = try await request(
                port, "POST /http-stream?session=x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
            let answer = try await post.waitForServerClose()
            #expect(answer.hasPrefix("HTTP/1.1 202"), "\(answer)")
            #expect(server.hub.connectionsByTransport["sse"] == 1)
            await stream.close()
        }
        try await application.group.shutdownGracefully()
    }

    @Test func answersThatNeverComeEndAtTheHandshakeTimeoutAndHoldNothing() async throws {
        let application = RemoteApplication(answers: false)
        let server = try await start(application)
        let port = server.localAddress?.port ?? 0
        try await finally({ await server.shutdown() }) {
            let stream = try await request(port, "GET /sse?channel=a HTTP/1.1\r\nHost: localhost\r\n\r\n")
            let post = try await request(
                port, "POST /http-stream?session=x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
            #expect(try await stream.waitForServerClose().isEmpty)
            #expect(try await post.waitForServerClose().isEmpty)
            try await eventually("no handshake held") {
                try await server.hub.statistics().get().pendingHandshakes == 0
            }
            #expect(server.hub.connectionCount == 0)
        }
        try await application.group.shutdownGracefully()
    }
}
