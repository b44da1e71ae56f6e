import NIOCore
import SwitchboardCore

/// The trivial application behind `switchboard echo`: each message goes back to its sender with its
/// type preserved, or with `broadcast` to every open connection, encoded once for all of them.
public struct EchoApplication: SwitchboardApplication {
    public let broadcast: Bool

    public init(broadcast: Bool) { self.broadcast = broadcast }

    public func connection(_ connection: ConnectionHandle, received message: DataMessage) {
        let frame: ByteBuffer
        switch message {
        case .text(let payload): frame = FrameEncoder.encode(.text, payload: payload)
        case .binary(let payload): frame = FrameEncoder.encode(.binary, payload: payload)
        }
        if broadcast {
            connection.hub.broadcast(frame: frame)
        } else {
            connection.send(frame: frame)
        }
    }
}
