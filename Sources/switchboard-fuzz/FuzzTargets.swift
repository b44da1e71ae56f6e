import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardNIO
import SwitchboardRedis
import SwitchboardServer

/// The parsers that face the internet and Redis, each taking arbitrary bytes. Any outcome is fine but a
/// crash, a hang or an allocation without bound: that is what the fuzzer (and the sanitizers under it)
/// looks for. `docs/fuzzing.md` says how to run them.
enum FuzzTarget: String, CaseIterable {
    /// Frames into messages (RFC 6455 and 7692: fragments, control frames, limits, UTF-8, compressed).
    case frames
    /// The upgrade request's checks (RFC 6455 §4.2.1), from header lines.
    case handshake
    /// A client command of protocol v1 (the JSON scanner beneath it).
    case command
    /// permessage-deflate data into a bounded message.
    case inflate
    /// Redis replies (RESP2 and RESP3), split where the input says.
    case resp

    static let maxMessageSize = 64 << 10

    func run(_ input: UnsafeRawBufferPointer) {
        switch self {
        case .frames: Self.frames(input)
        case .handshake: Self.handshake(input)
        case .command: _ = ClientCommand.parse(input)
        case .inflate: Self.inflate(input)
        case .resp: Self.resp(input)
        }
    }

    /// The first byte chooses how the rest is cut into reads (and whether deflate was negotiated).
    private static func frames(_ input: UnsafeRawBufferPointer) {
        guard let first = input.first else { return }
        let pool = first & 1 == 1 ? InflaterPool() : nil
        var assembler = MessageAssembler(
            maxMessageSize: maxMessageSize, inflaters: pool, contextTakeover: first & 2 == 2)
        defer { assembler.release() }
        let step = max(Int(first >> 2), 1)
        var buffer = ByteBuffer()
        var offset = 1
        while offset < input.count {
            let end = min(offset + step, input.count)
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: input[offset..<end]))
            offset = end
            do {
                while try assembler.next(from: &buffer) != nil {}
            } catch {
                return
            }
        }
    }

    private static func handshake(_ input: UnsafeRawBufferPointer) {
        let lines = String(decoding: input, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard let requestLine = lines.first else { return }
        let parts = requestLine.split(separator: " ")
        var headers = HTTPHeaders()
        for line in lines.dropFirst() {
            // What NIO's HTTP parser would hand over: header names are tokens (NIO's HTTPHeaders traps on others).
            guard let colon = line.firstIndex(of: ":"), !line[..<colon].isEmpty,
                line[..<colon].utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
            else { continue }
            headers.add(
                name: String(line[..<colon]),
                value: line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        let head = HTTPRequestHead(
            version: parts.count > 2 && parts[2] == "HTTP/1.0" ? .http1_0 : .http1_1,
            method: HTTPMethod(rawValue: parts.first.map(String.init) ?? "GET"),
            uri: parts.count > 1 ? String(parts[1]) : "/", headers: headers)
        for ownHosts in [OwnHostNames.loopback, .any] {
            _ = HandshakeValidator.validate(head, path: "/ws", origins: .sameOrigin, ownHosts: ownHosts)
        }
    }

    private static func inflate(_ input: UnsafeRawBufferPointer) {
        guard let inflater = try? MessageInflater() else { return }
        var output: ByteBuffer?
        var utf8 = UTF8Validator()
        let half = input.count / 2
        for piece in [input[..<half], input[half...]] {
            do {
                try inflater.inflate(
                    ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: piece)), into: &output, limit: maxMessageSize
                ) { utf8.feed($0) }
            } catch {
                return
            }
        }
        try? inflater.inflate(MessageInflater.tail, into: &output, limit: maxMessageSize) { utf8.feed($0) }
    }

    /// The first byte is where the input is cut into two reads.
    private static func resp(_ input: UnsafeRawBufferPointer) {
        guard let first = input.first else { return }
        var decoder = RESPDecoder()
        var buffer = ByteBuffer()
        let cut = min(1 + Int(first), input.count)
        for piece in [input[1..<cut], input[cut...]] {
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: piece))
            do {
                while try decoder.next(from: &buffer) != nil {}
            } catch {
                return
            }
        }
    }
}

#if FUZZING
    /// libFuzzer's entry: `SWITCHBOARD_FUZZ_TARGET` names the parser.
    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
        selectedTarget.run(UnsafeRawBufferPointer(start: data, count: size))
        return 0
    }

    @_silgen_name("LLVMFuzzerRunDriver")
    private func runFuzzerDriver(
        _ argc: UnsafeMutablePointer<CInt>,
        _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
        _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
    ) -> CInt

    /// SwiftPM links an executable's entry under this name: hand the command line to libFuzzer's driver.
    @_cdecl("switchboard_fuzz_main")
    func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
        var count = argc
        var arguments = argv
        return runFuzzerDriver(&count, &arguments) { data, size in fuzzOneInput(data, size) }
    }

    private let selectedTarget: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["SWITCHBOARD_FUZZ_TARGET"] ?? ""
        guard let target = FuzzTarget(rawValue: name) else {
            fatalError("SWITCHBOARD_FUZZ_TARGET must be one of \(FuzzTarget.allCases.map(\.rawValue))")
        }
        return target
    }()
#else
    /// Without the fuzzer: runs every file of a corpus through its target (the seeds and the crashes
    /// kept as regressions), so an ordinary build checks them on every test run.
    @main
    struct Replay {
        static func main() throws {
            let logger = Logger(label: "switchboard.fuzz")
            let arguments = CommandLine.arguments.dropFirst()
            guard let name = arguments.first, let target = FuzzTarget(rawValue: name), arguments.count >= 2 else {
                logger.error(
                    "usage: switchboard-fuzz TARGET CORPUS-DIRECTORY... (targets: \(FuzzTarget.allCases.map(\.rawValue)))"
                )
                exit(2)
            }
            var count = 0
            for directory in arguments.dropFirst() {
                let files = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
                for file in files {
                    let data = try Data(contentsOf: URL(fileURLWithPath: directory).appendingPathComponent(file))
                    data.withUnsafeBytes { target.run($0) }
                    count += 1
                }
            }
            logger.info("\(target.rawValue): \(count) inputs replayed")
        }
    }
#endif
