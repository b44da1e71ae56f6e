import NIOCore
import SwitchboardCore

/// The trivial application behind `switchboard echo`: each message goes back to its sender with its
/// type preserved, or with `broadcast` to every open connection, encoded once for all of them.
public struct EchoApplication: SwitchboardApplication {
    /// Send each message to every open connection (sender included) instead of back to its sender only.
    public let broadcast: Bool

    /// `broadcast` true behaves as `switchboard echo --broadcast`; false echoes to the sender only.
    public init(broadcast: Bool) { self.broadcast = broadcast }

    /// Echoes or broadcasts `message` with its type unchanged; called on the connection's event loop.
    public func connection(_ connection: any LocalConnection, received message: DataMessage) {
        let frame: ByteBuffer
        switch message {
        case .text(let payload): frame = FrameEncoder.encode(.text, payload: payload)
        case .binary(let payload): frame = FrameEncoder.encode(.binary, payload: payload)
        }
        if broadcast {
            connection.handle.hub.broadcast(frame: frame)
        } else {
            connection.send(frame, as: .standard, flush: false)
        }
    }
}
