import PropertyBased
import Testing

@testable import SwitchboardServer

/// Commands built from generated values parse back to those values, whatever the escapes in their strings.
@Suite("Command round trips, property-based", .timeLimit(.minutes(5)))
struct CommandProperties {
    @Test func subscribeAndPublishRoundTrip() async {
        await propertyCheck(
            input: Gen.int(in: 0...1_000_000), Gen.letterOrNumber.string(of: 1...20),
            Gen.unicodeScalar(in: " "..."\u{2FF}").array(of: 0...40), Gen.int(in: 0...1_000_000)
        ) { id, name, scalars, offset in
            var text = ""
            text.unicodeScalars.append(contentsOf: scalars)
            let channel = "chat:\(name)"
            let subscribe =
                #"{"id":\#(id),"cmd":"subscribe","channel":"\#(channel)","recover":{"offset":\#(offset),"epoch":"\#(name)"}}"#
            #expect(
                (try? ClientCommand.parse(Array(subscribe.utf8)).get())
                    == ClientCommand(
                        id: id,
                        kind: .subscribe(channel: channel, recover: StreamPosition(offset: offset, epoch: name))))
            let data = ServerMessage.quote(text)
            let publish = #"{"cmd":"publish","data":\#(data),"channel":"\#(channel)","id":\#(id)}"#
            #expect(
                (try? ClientCommand.parse(Array(publish.utf8)).get())
                    == ClientCommand(id: id, kind: .publish(channel: channel, data: data)))
        }
    }
}
