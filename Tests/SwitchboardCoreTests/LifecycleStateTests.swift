import NIOCore
import Testing

@testable import SwitchboardCore

@Suite("Connection state machine", .timeLimit(.minutes(5)))
struct ConnectionStateMachineTests {
    @Test func clientInitiatedClose() {
        var machine = ConnectionStateMachine()
        #expect(machine.upgraded() == .register)
        #expect(machine.received(.text(ByteBuffer(string: "x"))) == .deliver)
        #expect(machine.received(.ping(ByteBuffer())) == .sendPong)
        #expect(
            machine.received(.close(code: CloseCode(4000), reason: "")) == .replyCloseAndDisconnect(CloseCode(4000)))
        #expect(machine.state == .closing)
        #expect(machine.received(.text(ByteBuffer(string: "late"))) == .none)
        #expect(machine.transportClosed() == .unregister(.clientClosed))
        #expect(machine.transportClosed() == .none)
    }

    @Test func closeWithoutCodeIsAnsweredWithNormal() {
        var machine = ConnectionStateMachine()
        _ = machine.upgraded()
        #expect(machine.received(.close(code: nil, reason: "")) == .replyCloseAndDisconnect(.normal))
    }

    @Test func serverInitiatedCloseWaitsForThePeer() {
        var machine = ConnectionStateMachine()
        _ = machine.upgraded()
        #expect(machine.close(.shutdown, message: "bye") == .sendClose(.goingAway, "bye"))
        #expect(machine.close(.slowConsumer) == .none)  // the first reason wins
        #expect(machine.received(.text(ByteBuffer(string: "x"))) == .none)
        #expect(machine.received(.ping(ByteBuffer())) == .none)
        #expect(machine.received(.close(code: .goingAway, reason: "")) == .disconnect)
        #expect(machine.transportClosed() == .unregister(.shutdown))
    }

    @Test func closeTimeoutDisconnects() {
        var machine = ConnectionStateMachine()
        _ = machine.upgraded()
        #expect(machine.closeTimedOut() == .none)
        _ = machine.close(.pongTimeout)
        #expect(machine.closeTimedOut() == .disconnect)
        #expect(machine.transportClosed() == .unregister(.pongTimeout))
    }

    @Test func failureMapsToItsReason() {
        var machine = ConnectionStateMachine()
        _ = machine.upgraded()
        #expect(machine.fail(.invalidUTF8()) == .sendClose(.invalidPayload, "invalid UTF-8"))
        #expect(machine.transportClosed() == .unregister(.invalidPayload))
    }

    @Test func lostTransportWithoutClose() {
        var machine = ConnectionStateMachine()
        _ = machine.upgraded()
        #expect(machine.transportClosed() == .unregister(.connectionLost))
    }

    @Test func neverRegisteredMeansNothingToUnregister() {
        var machine = ConnectionStateMachine()
        #expect(machine.transportClosed() == .none)
    }

    @Test func everyReasonHasAWireCodeAndLabel() {
        for reason in DisconnectReason.allCases {
            #expect(!reason.rawValue.isEmpty)
            #expect(reason.closeCode.isValidOnWire || reason == .connectionLost)
        }
    }
}
