import Atomics
import NIOCore
import NIOHTTP1
import SwitchboardCore

/// An upgrade the hub has admitted (`Hub.admit`): it holds the connection's places under the limits (a slot
/// of `maxConnections`, its address's and its user's counts) until `Hub.adopt` hands them to the connection.
/// Dropped or cancelled without being adopted, it gives them back, so an embedding server that fails to
/// upgrade leaks nothing.
public final class UpgradeAdmission: Sendable {
    /// What the 101 answer must carry besides `Upgrade` and `Connection`: `Sec-WebSocket-Accept`, the
    /// chosen subprotocol and the negotiated extension.
    public let responseHeaders: HTTPHeaders
    /// The user the application's decision named, if any.
    public let userID: String?
    let subprotocol: String?
    let info: String?
    let expiresAt: NIODeadline?
    let attachment: (any Sendable)?
    let deflate: DeflateParameters?
    let clientAddress: String?
    let countedUser: String?
    let isLocal: Bool
    let started: NIODeadline
    /// A WebSocket, or a stream answered 200 with events.
    public let transport: Transport
    /// A stream's events are gzip-compressed (the client accepts it and deflate is configured).
    let gzip: Bool
    let hub: Hub
    /// Set once, by the first of `adopt`, `cancel` and deinit: whoever sets it owns the places.
    private let taken = ManagedAtomic(false)

    init(
        responseHeaders: HTTPHeaders, userID: String?, subprotocol: String?, info: String?, expiresAt: NIODeadline?,
        attachment: (any Sendable)?, deflate: DeflateParameters?, clientAddress: String?, countedUser: String?,
        isLocal: Bool, started: NIODeadline, transport: Transport = .webSocket, gzip: Bool = false, hub: Hub
    ) {
        self.transport = transport
        self.gzip = gzip
        self.responseHeaders = responseHeaders
        self.userID = userID
        self.subprotocol = subprotocol
        self.info = info
        self.expiresAt = expiresAt
        self.attachment = attachment
        self.deflate = deflate
        self.clientAddress = clientAddress
        self.countedUser = countedUser
        self.isLocal = isLocal
        self.started = started
        self.hub = hub
    }

    /// True for the one caller that may use the places (or give them back).
    func take() -> Bool { taken.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged }

    /// Gives the places back: the embedding server will not upgrade after all.
    public func cancel() {
        guard take() else { return }
        release()
    }

    func release() {
        hub.releaseConnectionSlot()
        if let clientAddress { hub.releaseAddress(clientAddress) }
        if let countedUser { hub.releaseUser(countedUser) }
    }

    deinit { cancel() }
}

/// The hub's answer to an upgrade request: admitted, with the places it holds, or refused with an HTTP answer.
public enum UpgradeVerdict: Sendable {
    /// Answer 101 with the admission's headers, then `Hub.adopt` the channel.
    case admitted(UpgradeAdmission)
    /// Answer with the refusal's status, headers and reason, and close.
    case refused(UpgradeRefusal)
}

/// `Hub.adopt` could not take the channel.
public enum AdoptionError: Error, Sendable {
    /// The admission was adopted or cancelled already.
    case admissionUsed
    /// The channel's event loop is not one of the hub's: make the hub with the embedding server's
    /// `EventLoopGroup`, so every connection lives on the loop of its registry shard.
    case foreignEventLoop
}
