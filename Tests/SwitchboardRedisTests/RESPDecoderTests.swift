import NIOCore
import PropertyBased
import Testing

@testable import SwitchboardRedis

@Suite("RESP codec", .timeLimit(.minutes(5)))
struct RESPDecoderTests {
    static let stream =
        "+OK\r\n-ERR wrong\r\n:-42\r\n$5\r\nhel\r\n\r\n$-1\r\n*3\r\n:1\r\n$0\r\n\r\n*-1\r\n_\r\n,3.5\r\n,inf\r\n#t\r\n"
        + "%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n#f\r\n~2\r\n+x\r\n+y\r\n>3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        + "(12345678901234567890\r\n=15\r\ntxt:Some string\r\n!21\r\nSYNTAX invalid syntax\r\n"
        + "|1\r\n+ttl\r\n:3600\r\n:7\r\n"
    static let expected: [RESPValue] = [
        .simpleString("OK"), .error("ERR wrong"), .integer(-42), .bulkString(ByteBuffer(string: "hel\r\n")), .null,
        .array([.integer(1), .bulkString(ByteBuffer()), .null]), .null, .double(3.5), .double(.infinity),
        .boolean(true),
        .map([(.simpleString("a"), .integer(1)), (.simpleString("b"), .array([.boolean(false)]))]),
        .set([.simpleString("x"), .simpleString("y")]),
        .push([
            .bulkString(ByteBuffer(string: "message")), .bulkString(ByteBuffer(string: "ch")),
            .bulkString(ByteBuffer(string: "hi")),
        ]),
        .bigNumber("12345678901234567890"), .verbatimString("Some string"), .error("SYNTAX invalid syntax"),
        .integer(7),
    ]

    private func decodeAll(_ chunks: [ByteBuffer]) throws -> [RESPValue] {
        var decoder = RESPDecoder()
        var buffer = ByteBuffer()
        var values: [RESPValue] = []
        for var chunk in chunks {
            buffer.writeBuffer(&chunk)
            while let value = try decoder.next(from: &buffer) { values.append(value) }
        }
        #expect(buffer.readableBytes == 0)
        return values
    }

    @Test func everyTypeInOneRead() throws {
        #expect(try decodeAll([ByteBuffer(string: Self.stream)]) == Self.expected)
    }

    /// The same values whatever the network does: split in two at every position, and byte by byte.
    @Test func splitAtEveryPosition() throws {
        let bytes = Array(Self.stream.utf8)
        for cut in 0...bytes.count {
            let values = try decodeAll([ByteBuffer(bytes: bytes[..<cut]), ByteBuffer(bytes: bytes[cut...])])
            #expect(values == Self.expected, "cut at \(cut)")
        }
        #expect(try decodeAll(bytes.map { ByteBuffer(bytes: [$0]) }) == Self.expected)
    }

    @Test(
        "garbage is a protocol error, not a crash or a huge allocation",
        arguments: [
            "?\r\n", ":12x\r\n", "$-5\r\n", "$999999999999\r\n", "*99999999999\r\n", "#x\r\n", "$2\r\nabcd\r\n",
        ])
    func garbage(input: String) {
        var decoder = RESPDecoder()
        var buffer = ByteBuffer(string: input)
        #expect(throws: RESPProtocolError.self) { _ = try decoder.next(from: &buffer) }
    }

    @Test func nestingIsBounded() {
        var decoder = RESPDecoder()
        var buffer = ByteBuffer(string: String(repeating: "*1\r\n", count: 100) + ":1\r\n")
        #expect(throws: RESPProtocolError.self) { _ = try decoder.next(from: &buffer) }
    }

    /// A reply that arrives over many reads is parsed once: every complete element of an unfinished
    /// aggregate leaves the buffer at once, so the caller never keeps (or parses again) what was consumed.
    @Test func completeElementsOfAnUnfinishedReplyAreConsumed() throws {
        var decoder = RESPDecoder()
        var buffer = ByteBuffer(string: "*3\r\n$3\r\none\r\n*2\r\n:2\r\n")
        #expect(try decoder.next(from: &buffer) == nil)
        #expect(buffer.readableBytes == 0)
        buffer.writeString(":3\r\n$4\r\nfo")
        #expect(try decoder.next(from: &buffer) == nil)
        #expect(buffer.readableBytes == "$4\r\nfo".utf8.count, "only the unfinished bulk string is kept")
        buffer.writeString("ur\r\n+next\r\n")
        let expected: RESPValue = .array([
            .bulkString(ByteBuffer(string: "one")), .array([.integer(2), .integer(3)]),
            .bulkString(ByteBuffer(string: "four")),
        ])
        #expect(try decoder.next(from: &buffer) == expected)
        #expect(try decoder.next(from: &buffer) == .simpleString("next"))
    }

    /// A stream that never sends CRLF is not buffered without bound.
    @Test func aLineWithoutEndIsBounded() {
        var decoder = RESPDecoder()
        var buffer = ByteBuffer(string: "+" + String(repeating: "a", count: RESPDecoder.maxLineLength + 1))
        #expect(throws: RESPProtocolError.self) { _ = try decoder.next(from: &buffer) }
    }

    @Test func commandsAreArraysOfBulkStrings() {
        var buffer = ByteBuffer()
        RESPEncoder.encode(["SET", "k", .bytes(ByteBuffer(string: "v\r\n")), RESPArgument(12)], into: &buffer)
        #expect(String(buffer: buffer) == "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$2\r\n12\r\n")
    }

    /// Any command encodes to what the decoder reads back as an array of the same bulk strings, wherever the
    /// stream is cut.
    @Test func commandsRoundTripWhereverTheStreamIsCut() async {
        await propertyCheck(input: Gen.uint8().array(of: 0...40).array(of: 1...6), Gen.int(in: 0...400)) {
            arguments, cut in
            var encoded = ByteBuffer()
            RESPEncoder.encode(arguments.map { .bytes(ByteBuffer(bytes: $0)) }, into: &encoded)
            let bytes = Array(encoded.readableBytesView)
            let at = min(cut, bytes.count)
            var decoder = RESPDecoder()
            var buffer = ByteBuffer(bytes: bytes[..<at])
            var value = try? decoder.next(from: &buffer)
            buffer.writeBytes(bytes[at...])
            if value == nil { value = try? decoder.next(from: &buffer) }
            #expect(value == .array(arguments.map { .bulkString(ByteBuffer(bytes: $0)) }))
            #expect(buffer.readableBytes == 0)
        }
    }
}
