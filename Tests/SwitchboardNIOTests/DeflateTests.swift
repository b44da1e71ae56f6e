import CompressNIO
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwitchboardClient
import SwitchboardCore
import SwitchboardNIO
import SwitchboardTestSupport
import Testing

/// Collects the raw frames a client receives, RSV1 included, so a test can see what went out compressed.
private final class FrameRecorder: ClientFrameSink, Sendable {
    // Lock: guards the frames, appended on the client's event loop and read by the test.
    private let frames = NIOLockedValueBox<[ServerFrame]>([])
    func received(_ frame: ServerFrame, on channel: any Channel) { frames.withLockedValue { $0.append(frame) } }
    func disconnected() {}
    var all: [ServerFrame] { frames.withLockedValue { $0 } }
}

private let offer = "permessage-deflate; client_max_window_bits"

private func openRecorded(port: Int, offering: Bool = true) async throws -> (any Channel, FrameRecorder) {
    var options = ClientOptions(path: "/ws")
    if offering { options.headers = [("Sec-WebSocket-Extensions", offer)] }
    let recorder = FrameRecorder()
    let (channel, _) = try await WebSocketClient.open(
        host: "127.0.0.1", port: port, options: options, group: MultiThreadedEventLoopGroup.singleton,
        sink: { _ in recorder })
    return (channel, recorder)
}

/// A compressed client message as RFC 7692 §7.2.1 has it, input produced piece by piece so that a test can
/// make a huge expansion without holding it.
private func deflated(pieces: Int, piece: [UInt8]) throws -> [UInt8] {
    let compressor = try ZlibCompressor(algorithm: .deflate)
    var output = ByteBuffer()
    for index in 0..<pieces {
        var input = ByteBuffer(bytes: piece)
        output.reserveCapacity(minimumWritableBytes: compressor.maxSize(from: input) + 16)
        try compressor.deflate(from: &input, to: &output, flush: index == pieces - 1 ? .sync : .no)
    }
    return Array(output.readableBytesView.dropLast(4))
}

private func inflate(_ payload: ByteBuffer) throws -> String {
    var input = payload
    input.writeBytes([0x00, 0x00, 0xFF, 0xFF])
    let inflater = try ZlibDecompressor(algorithm: .deflate)
    var output = ByteBuffer()
    output.reserveCapacity(1 << 20)
    do { try inflater.inflate(from: &input, to: &output) } catch let error as CompressNIOError
        where error == .inputBufferOverflow
    {}
    return String(buffer: output)
}

/// The process's resident set; nil (and the test fails) where it cannot be read, never a made-up 0.
private func residentBytes() -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
        let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
    else { return nil }
    return kilobytes * 1024
}

@Suite("permessage-deflate over real sockets", .serialized, .timeLimit(.minutes(5)))
struct DeflateTransportTests {
    @Test func answeredOnlyWhenConfigured() async throws {
        let request = upgradeRequest(extra: "Sec-WebSocket-Extensions: \(offer)\r\n")
        for enabled in [true, false] {
            let server = try await TestServer.start { if enabled { $0.deflate = DeflateOptions() } }
            let connection = try await RawConnection.connect(port: server.port)
            connection.send(request)
            try await eventually { connection.receivedText.contains("\r\n\r\n") }
            let head = connection.receivedText
            #expect(head.hasPrefix("HTTP/1.1 101"))
            #expect(
                head.contains(
                    "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
                )
                    == enabled)
            #expect(head.lowercased().contains("sec-websocket-extensions") == enabled)
            await connection.close()
            await server.stop()
        }
    }

    @Test func echoesCompressedAndPlainMessages() async throws {
        let server = try await TestServer.start { $0.deflate = DeflateOptions(minSize: 64) }
        try await finally({ await server.stop() }) {
            let (channel, recorder) = try await openRecorded(port: server.port)
            let large = String(repeating: "a message worth compressing ", count: 200)
            let compressed = try deflated(pieces: 1, piece: Array(large.utf8))
            channel.writeAndFlush(ClientFrameEncoder.encode(opcode: 1, rsv: 4, payload: compressed), promise: nil)
            channel.writeAndFlush(ClientFrameEncoder.text("small"), promise: nil)
            try await eventually { recorder.all.count == 2 }
            let frames = recorder.all
            #expect(frames[0].compressed && frames[0].opcode == 1)
            #expect(frames[0].payload.readableBytes < large.utf8.count / 10)
            #expect(try inflate(frames[0].payload) == large)
            #expect(!frames[1].compressed && String(buffer: frames[1].payload) == "small")
            try await channel.close()
        }
    }

    @Test func broadcastIsCompressedOncePerWindowAndShared() async throws {
        let server = try await TestServer.start {
            $0.threads = 1
            $0.deflate = DeflateOptions()
        }
        try await finally({ await server.stop() }) {
            var receivers: [(any Channel, FrameRecorder)] = []
            for _ in 0..<10 { receivers.append(try await openRecorded(port: server.port)) }
            let plain = try await openRecorded(port: server.port, offering: false)
            try await eventually { server.hub.connectionCount == 11 }
            let text = String(repeating: "news for everyone ", count: 100)
            server.hub.broadcast(text: text)
            for (_, recorder) in receivers + [plain] { try await eventually { recorder.all.count == 1 } }
            for (_, recorder) in receivers {
                #expect(recorder.all[0].compressed)
                #expect(try inflate(recorder.all[0].payload) == text)
            }
            #expect(!plain.1.all[0].compressed && String(buffer: plain.1.all[0].payload) == text)
            let shard = server.hub.loopShards[0]
            #expect(try await shard.eventLoop.submit { shard.deflater?.compressedCount }.get() == 1)
            for (channel, _) in receivers + [plain] { try await channel.close() }
        }
    }

    @Test(
        "a decompression bomb closes 1009 and the process's memory does not jump", arguments: [100, 1000])
    func bomb(ratio: Int) async throws {
        let limit = 1 << 20
        let server = try await TestServer.start {
            $0.maxMessageSize = limit
            $0.deflate = DeflateOptions()
        }
        try await finally({ await server.stop() }) {
            // 64 MiB once inflated: zeros deflate about 1000:1; one varied byte in 64 brings it near 100:1.
            let piece = (0..<(1 << 20)).map {
                ratio == 100 && $0 % 64 == 0 ? UInt8(truncatingIfNeeded: $0 / 64 * 37) : 0
            }
            let payload = try deflated(pieces: 64, piece: piece)
            let achieved = (64 << 20) / payload.count
            #expect(achieved >= ratio / 2 && achieved <= ratio * 3)
            let frame = ClientFrameEncoder.encode(opcode: 2, rsv: 4, payload: payload)
            let bystander = try await server.connect()

            let before = try #require(residentBytes())
            var options = ClientOptions(path: "/ws")
            options.headers = [("Sec-WebSocket-Extensions", offer)]
            let attacker = try await WebSocketClient.connect(
                host: "127.0.0.1", port: server.port, options: options, group: MultiThreadedEventLoopGroup.singleton)
            attacker.sendRaw(frame)
            let close = try await attacker.waitForClose(timeout: .seconds(30))
            #expect(close?.code == 1009)
            let grown = try #require(residentBytes()) - before
            #expect(grown < 16 << 20, "RSS grew by \(grown) bytes")
            try await eventually { server.closedCount(.messageTooBig) == 1 }

            bystander.send(text: "still here")
            #expect(try await bystander.nextMessage() == .text("still here"))
            await bystander.disconnect()
        }
    }
}
