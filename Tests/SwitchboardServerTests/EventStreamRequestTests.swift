import Foundation
import NIOHTTP1
import SwitchboardCore
import Testing

@testable import SwitchboardServer

@Suite("Event stream requests and session ids")
struct EventStreamRequestTests {
    @Test func lastEventIDsParseOnePositionPerChannel() {
        #expect(EventStreamRequest.positions("ab:3", count: 1) == [StreamPosition(offset: 3, epoch: "ab")])
        // An epoch may hold a colon (the offset is after the last one); an empty item has no position.
        #expect(
            EventStreamRequest.positions("a:b:3,,c:0", count: 3) == [
                StreamPosition(offset: 3, epoch: "a:b"), nil, StreamPosition(offset: 0, epoch: "c"),
            ])
        #expect(EventStreamRequest.positions("", count: 1) == [nil])  // no position: from now
        for bad in ["3", ":3", "a:", "a:-1", "a:x", "a:1,b:2", "a b:1", "a:99999999999999999999"] {
            #expect(EventStreamRequest.positions(bad, count: 1) == nil, "\(bad)")
        }
        #expect(EventStreamRequest.positions(String(repeating: "x", count: 200) + ":1", count: 1) == nil)
    }

    @Test func sessionIDsNameTheNodeTheConnectionAndTheSecret() throws {
        let id = StreamSessionID(node: "node.a", client: ConnectionID(shard: 1, sequence: 7), secret: "s3cret")
        let parsed = try #require(StreamSessionID(id.description))
        #expect(parsed.node == "node.a" && parsed.client == id.client && parsed.secret == "s3cret")
        for bad in ["", "a.b", ".1.x", "a.x.y", "a.1.", String(repeating: "a", count: 600) + ".1.x"] {
            #expect(StreamSessionID(bad) == nil, "\(bad)")
        }
        #expect(ChannelsApplication.sameSecret("abc", "abc"))
        #expect(!ChannelsApplication.sameSecret("abc", "abd") && !ChannelsApplication.sameSecret("abc", "abcd"))
    }

    @Test func aPostForAnotherNodeTravelsWhole() throws {
        let command = NodeCommand.post(node: "b", client: 42, secret: "s", body: "{\"id\":1}\n{\"id\":2}")
        let decoded = try JSONDecoder().decode(NodeCommand.self, from: JSONEncoder().encode(command))
        #expect(decoded == command)
    }
}
