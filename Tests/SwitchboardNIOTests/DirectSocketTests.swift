import NIOCore
import NIOPosix
import Testing

@testable import SwitchboardNIO

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Direct writes reach the socket whose descriptor the server's own accept handed NIO, on every platform.
@Suite("Direct socket writes", .timeLimit(.minutes(5)))
struct DirectSocketTests {
    /// Once NIO has closed a connection, its descriptor's number is free for the next socket the process
    /// opens: a direct write must not land there. The test puts a socket of its own on that number, then
    /// writes through the closed connection's `DirectSocket`.
    @Test func aClosedChannelsDescriptorIsNeverWritten() async throws {
        let server = try await TestServer.start(echo: false) { $0.directWrites = true }
        let client = try await server.connectRegistered()
        let socket = try #require(try await directSockets(server).first)
        let loop = socket.channel.eventLoop
        // Alive, the socket is written directly.
        let wrote = try await loop.submit {
            var frame = ByteBuffer(bytes: [0x81, 0x02] + Array("hi".utf8))
            return socket.write(&frame)
        }.get()
        #expect(wrote)
        #expect(try await client.nextMessage() == .text("hi"))

        try await socket.channel.close()
        // The number is reused by the lowest-first rule: take socket pairs until one end lands on it.
        var pairs: [[CInt]] = []
        defer { for pair in pairs { for end in pair { close(end) } } }
        var reused: [CInt]?
        for _ in 0..<64 where reused == nil {
            var pair: [CInt] = [-1, -1]
            try #require(socketpair(AF_UNIX, Self.streamType, 0, &pair) == 0)
            pairs.append(pair)
            if pair[0] == socket.descriptor {
                reused = pair
            } else if pair[1] == socket.descriptor {
                reused = [pair[1], pair[0]]
            }
        }
        let peer = try #require(reused?[1])
        let results = try await loop.submit {
            var frame = ByteBuffer(bytes: [0x81, 0x02] + Array("no".utf8))
            return (socket.write(&frame), socket.write([ByteBuffer(bytes: [0x81, 0x00])]))
        }.get()
        #expect(results.0 == false && results.1 == 0)
        var byte: UInt8 = 0
        #expect(recv(peer, &byte, 1, CInt(MSG_DONTWAIT)) == -1, "a closed connection's write reached another socket")
        await client.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }

    #if canImport(Darwin)
        private static let streamType = SOCK_STREAM
    #else
        private static let streamType = CInt(SOCK_STREAM.rawValue)
    #endif

    private func directSockets(_ server: TestServer) async throws -> [DirectSocket] {
        var found: [DirectSocket] = []
        for shard in server.hub.shards {
            found += try await shard.eventLoop.submit { shard.registry.byID.values.compactMap(\.directSocket) }.get()
        }
        return found
    }

    /// Plain connections write directly (until they close), and only when the configuration allows it.
    @Test(arguments: [true, false])
    func connectionsWriteDirectlyAsConfigured(directWrites: Bool) async throws {
        let server = try await TestServer.start(echo: false) { $0.directWrites = directWrites }
        let client = try await server.connectRegistered()
        func direct() async throws -> [Bool] {
            var found: [Bool] = []
            for shard in server.hub.shards {
                found += try await shard.eventLoop.submit {
                    shard.registry.byID.values.map { $0.outbound.path == .direct }
                }.get()
            }
            return found
        }
        #expect(try await direct() == [directWrites])
        // And what it writes arrives.
        server.hub.broadcast(text: "hello")
        #expect(try await client.nextMessage() == .text("hello"))
        await client.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }
}
