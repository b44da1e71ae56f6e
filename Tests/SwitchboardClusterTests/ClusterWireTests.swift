import NIOCore
import SwitchboardCore
import SwitchboardServer
import Testing

@testable import SwitchboardCluster

@Suite("Cluster wire format and shard ring", .timeLimit(.minutes(5)))
struct ClusterWireTests {
    @Test func publicationsRoundTripWithAnyUserAndData() {
        for user in [nil, "", "ada", "a,b:c", "é€𝄞", "-1:"] as [String?] {
            for data in ["{}", "{\"text\":\"a,b\\n:c\"}", "\"é\"", "[1,2,3]"] {
                let body = ClusterWire.publicationBody(user: user, data: data)
                let wire = "p42,epoch9," + body
                let decoded = ClusterWire.decode(ByteBuffer(string: wire), receivedAt: 7)
                #expect(
                    decoded == .publication(Publication(offset: 42, data: data, user: user, time: 7, epoch: "epoch9")))
            }
        }
    }

    @Test func membersRoundTrip() {
        let members = [
            PresenceMember(client: ConnectionID(shard: 1, sequence: 99), user: "ada", data: "{\"a\":1}", node: "n1"),
            PresenceMember(client: ConnectionID(shard: 0, sequence: 1), user: nil, data: nil, node: nil),
            PresenceMember(client: ConnectionID(shard: 3, sequence: 5), user: "x,y", data: "\"z,\"", node: "abc"),
        ]
        for member in members {
            let wire = ClusterWire.member(member)
            #expect(ClusterWire.decode(ByteBuffer(string: "j" + wire), receivedAt: 0) == .join(member))
            #expect(ClusterWire.decode(ByteBuffer(string: "l" + wire), receivedAt: 0) == .leave(member))
        }
        #expect(members[0].clientID == "n1-1-99")
        #expect(members[1].clientID == "0-1")
    }

    @Test func garbageIsRejectedNotTrusted() {
        for wire in ["", "x", "p", "p1", "pX,e,-1:", "p1,e,5:ab", "p1,e,-2:", "j", "j1,2", "jn,notanumber,-1:"] {
            #expect(ClusterWire.decode(ByteBuffer(string: wire), receivedAt: 0) == nil, "\(wire)")
        }
    }

    @Test func theRingSpreadsChannelsAndMovesFewWhenAnInstanceIsAdded() {
        let channels = (0..<10_000).map { "chat:room-\($0)" }
        let three = ShardRing(count: 3)
        let four = ShardRing(count: 4)
        var counts = [0, 0, 0]
        var moved = 0
        for channel in channels {
            let before = three.index(of: channel)
            counts[before] += 1
            let after = four.index(of: channel)
            if after != before {
                moved += 1
                // Jump hashing only ever moves a channel to the new instance.
                #expect(after == 3)
            }
        }
        #expect(counts.allSatisfy { (2_800...3_900).contains($0) }, "\(counts)")
        #expect((2_000...3_000).contains(moved), "moved \(moved) of 10,000; about a quarter expected")
        #expect(ShardRing(count: 1).index(of: "anything") == 0)
        #expect(channels.allSatisfy { three.index(of: $0) == ShardRing(count: 3).index(of: $0) })
    }
}
