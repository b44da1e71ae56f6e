import Foundation
import Testing

@testable import SwitchboardServer

@Suite("Server messages", .timeLimit(.minutes(5)))
struct ServerMessageTests {
    /// Every string comes back unchanged through a standard JSON parser, and only what RFC 8259 requires
    /// is escaped (so plain names stay readable in pushes).
    @Test func quotedStringsRoundTripThroughAJSONParser() throws {
        let strings = [
            "", "chat:room", "quote \" and backslash \\", "line\nfeed\r\ttab", "\u{0}\u{1}\u{8}\u{C}\u{1F}\u{7F}",
            "slash / stays", "ünïcødé ✓ 🎉", "\"", "\\",
        ]
        for string in strings {
            let quoted = ServerMessage.quote(string)
            let parsed = try JSONSerialization.jsonObject(with: Data(quoted.utf8), options: [.fragmentsAllowed])
            #expect(parsed as? String == string, "\(quoted)")
        }
        #expect(ServerMessage.quote("chat:room") == "\"chat:room\"")
        #expect(ServerMessage.quote("a\"b\\c\n\u{1}") == #""a\"b\\c\n\u0001""#)
    }
}
