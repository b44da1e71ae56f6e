import Foundation
import SwitchboardCore
import SwitchboardServer
import Testing

/// The error codes client authors read in the documents are the ones the server sends.
@Suite("Documentation", .timeLimit(.minutes(5)))
struct DocumentationTests {
    static let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../docs").standardized

    private func read(_ name: String) throws -> String {
        try String(contentsOf: Self.docs.appendingPathComponent(name), encoding: .utf8)
    }

    @Test func protocolErrorTableMatchesTheCode() throws {
        let text = try read("PROTOCOL.md")
        var table: [(Int, String)] = []
        for line in text.split(separator: "\n") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if cells.count >= 2, let code = Int(cells[0]), (100..<200).contains(code) { table.append((code, cells[1])) }
        }
        #expect(table.map(\.0) == ProtocolError.all.map(\.code))
        #expect(table.map(\.1) == ProtocolError.all.map(\.message))
    }

    /// The close-code table lists every code the server sends (all but the two that never go on the wire).
    @Test func protocolCloseTableListsEveryCodeTheServerSends() throws {
        let text = try read("PROTOCOL.md")
        var table: Set<UInt16> = []
        for line in text.split(separator: "\n") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if let code = cells.first.flatMap({ UInt16($0) }), (1000..<5000).contains(code) { table.insert(code) }
        }
        let sent: [CloseCode] = [
            .normal, .goingAway, .protocolError, .unsupportedData, .invalidPayload, .policyViolation, .messageTooBig,
            .internalError, .tryAgainLater, .disconnected, .tokenExpired, .authenticationTimeout, .invalidToken,
        ]
        #expect(Set(sent.map(\.rawValue)) == table)
    }

    /// Every "error N (meaning)" in the configuration guide names the code's meaning from the table.
    @Test func configurationGuideCitesTheSameCodes() throws {
        let text = try read("CONFIGURATION.md")
        let pattern = try NSRegularExpression(pattern: #"error (\d{3})(?: \(([^)]*)\))?"#)
        let matches = pattern.matches(in: text, range: NSRange(text.startIndex..., in: text))
        #expect(matches.count >= 4)
        for match in matches {
            guard let codeRange = Range(match.range(at: 1), in: text), let code = Int(text[codeRange]) else { continue }
            let meaning = Range(match.range(at: 2), in: text).map { String(text[$0]) }
            let error = ProtocolError.all.first { $0.code == code }
            #expect(error != nil, "error \(code) is not in the table")
            #expect(meaning == error?.message, "error \(code) is cited as \(meaning ?? "nothing")")
        }
    }
}
