import Testing

@testable import SwitchboardServer

@Suite("Command parsing", .timeLimit(.minutes(5)))
struct ClientCommandTests {
    private func parse(_ text: String) -> Result<ClientCommand, CommandFailure> {
        ClientCommand.parse(Array(text.utf8))
    }

    private func kind(_ text: String) -> ClientCommand.Kind? {
        try? parse(text).get().kind
    }

    private func failure(_ text: String) -> CommandFailure? {
        guard case .failure(let failure) = parse(text) else { return nil }
        return failure
    }

    @Test func publishKeepsTheDataBytesAsSent() throws {
        let data = #"{"b": [1, 2.5e-3, -0, true, null], "a": "x\"\u00e9\n", "c": {}}"#
        #expect(
            kind(#"{"id": 3, "cmd": "publish", "channel": "chat:x", "data": \#(data) }"#)
                == .publish(channel: "chat:x", data: data))
        #expect(
            kind(#"{"data":"just a string","cmd":"publish","channel":"c","id":0}"#)
                == .publish(channel: "c", data: #""just a string""#))
        #expect(
            try parse(#" {"id":7,"cmd":"ping","extra":[{"deep":[1]}]} "#).get() == ClientCommand(id: 7, kind: .ping))
    }

    @Test func everyCommandReadsItsFields() {
        #expect(
            kind(#"{"id":1,"cmd":"subscribe","channel":"chat:a","recover":{"offset":5,"epoch":"e1"}}"#)
                == .subscribe(channel: "chat:a", recover: StreamPosition(offset: 5, epoch: "e1")))
        #expect(kind(#"{"id":1,"cmd":"subscribe","channel":"chat:a"}"#) == .subscribe(channel: "chat:a", recover: nil))
        #expect(kind(#"{"id":1,"cmd":"unsubscribe","channel":"a"}"#) == .unsubscribe(channel: "a"))
        #expect(kind(#"{"id":1,"cmd":"presence","channel":"a"}"#) == .presence(channel: "a"))
        #expect(kind(#"{"id":1,"cmd":"history","channel":"a"}"#) == .history(channel: "a", limit: 100, since: nil))
        #expect(
            kind(#"{"id":1,"cmd":"history","channel":"a","limit":5,"since":1e1}"#)
                == .history(channel: "a", limit: 5, since: 10))
        // Escapes in strings, including a surrogate pair.
        #expect(kind(#"{"id":1,"cmd":"presence","channel":"a\/b\u0041\ud83d\ude00"}"#) == .presence(channel: "a/bA😀"))
    }

    @Test func whatCannotBeAnsweredFailsWithoutAnID() {
        let notJSON = [
            "", "{", "[]", "1", #"{"id":1,}"#, #"{"id":01}"#, #"{"id":1} x"#, #"{'id':1}"#,
            "{\"id\":1,\"cmd\":\"a\tb\"}", #"{"id":1,"data":[1,]}"#, #"{"id":1,"data":tru}"#,
            #"{"id":1,"data":"\x"}"#, #"{"id":1,"data":- 1}"#, #"{"id":1,"data":1.}"#, #"{"id":1,"data":"open}"#,
            #"{"id":1,"data":"\u12"}"#,
        ]
        for text in notJSON {
            #expect(failure(text) == CommandFailure(id: nil, error: .badRequest("not a JSON object")), "\(text)")
        }
        for text in [#"{"id":"1"}"#, #"{"id":-1}"#, #"{"id":1.5}"#, #"{"cmd":"ping"}"#] {
            #expect(failure(text) == CommandFailure(id: nil, error: .badRequest("missing or invalid id")), "\(text)")
        }
    }

    @Test func connectionInfoMustBeOneJSONValue() {
        #expect(JSONScanner.isValue(#" {"name": "Ada"} "#))
        #expect(JSONScanner.isValue(#""plain""#))
        #expect(!JSONScanner.isValue("Ada"))
        #expect(!JSONScanner.isValue(#"{"name": "Ada"}, 1"#))
        #expect(!JSONScanner.isValue(""))
    }

    @Test func nestingIsBoundedNotRecursedWithoutLimit() {
        let tooDeep = CommandFailure(id: 1, error: .badRequest("nested deeper than 64 levels"))
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(failure(#"{"id":1,"cmd":"publish","channel":"a","data":\#(deep)}"#) == tooDeep)
        // The id after the deep value is still read, and a string's brackets do not count.
        let mixed = String(repeating: #"{"a":["]}","#, count: 70) + "0" + String(repeating: "]}", count: 70)
        #expect(failure(#"{"cmd":"publish","data":\#(mixed),"channel":"a","id":1}"#) == tooDeep)
        let limit = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        #expect(
            kind(#"{"id":1,"cmd":"publish","channel":"a","data":\#(limit)}"#) == .publish(channel: "a", data: limit))
        #expect(failure(#"{"id":1,"cmd":"publish","channel":"a","data":[\#(limit)]}"#) == tooDeep)
        // Brackets that never close are not JSON: nothing can be answered.
        #expect(failure(#"{"id":1,"data":\#(String(repeating: "[", count: 100))"#)?.id == nil)
        #expect(!JSONScanner.isValue("[" + limit + "]"))
    }

    @Test func wrongFieldsAreAnsweredUnderTheID() {
        #expect(failure(#"{"id":4}"#) == CommandFailure(id: 4, error: .badRequest("missing cmd")))
        #expect(failure(#"{"id":4,"cmd":7}"#) == CommandFailure(id: 4, error: .badRequest("cmd must be a string")))
        #expect(failure(#"{"id":4,"cmd":"fly"}"#) == CommandFailure(id: 4, error: .unknownCommand))
        #expect(failure(#"{"id":4,"cmd":"publish"}"#) == CommandFailure(id: 4, error: .badRequest("missing channel")))
        #expect(
            failure(#"{"id":4,"cmd":"publish","channel":"a"}"#)
                == CommandFailure(id: 4, error: .badRequest("missing data")))
        #expect(
            failure(#"{"id":4,"cmd":"subscribe","channel":"a","recover":{"offset":"x","epoch":"e"}}"#)
                == CommandFailure(id: 4, error: .badRequest("recover needs offset and epoch")))
        #expect(
            failure(#"{"id":4,"cmd":"history","channel":"a","limit":-1}"#)
                == CommandFailure(id: 4, error: .badRequest("limit must not be negative")))
        #expect(
            failure(#"{"id":4,"cmd":"history","channel":"a","limit":"all"}"#)
                == CommandFailure(id: 4, error: .badRequest("limit must be a whole number")))
    }
}
