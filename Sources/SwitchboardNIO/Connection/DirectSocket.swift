import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A connection's socket, written with `send(2)` (one frame) or `writev(2)` (several) while NIO holds
/// nothing unwritten for it.
///
/// Why: with thousands of receivers, each fan-out write reaches a connection that is cold in cache, and
/// NIO's outbound path touches half a dozen objects per write (two pipeline traversals, the channel's
/// lifecycle state, its pending-writes queue, the socket object), about half the server's user-space time
/// per delivery. A frame the kernel takes whole never needs any of it. What the kernel does not take (a
/// full socket buffer, an error) is handed to NIO, which owns everything from then on: buffering,
/// writability, errors and closing; the connection writes directly again only once NIO holds no unwritten
/// bytes, so bytes never overtake each other.
///
/// NIO keeps an accepted channel's descriptor private, so it is read once, at the upgrade, by reflection,
/// and believed only when the descriptor's peer and local ports are the channel's: a NIO whose layout
/// changed yields nil, and the connection simply writes through the pipeline as before.
struct DirectSocket {
    let descriptor: CInt

    /// The socket of a plain TCP channel (not for TLS: those bytes must pass the TLS handler).
    init?(channel: any Channel) {
        #if canImport(Glibc) || canImport(Musl)
            guard let socket = Self.storedProperty("socket", of: channel),
                let descriptor = Self.storedProperty("descriptor", of: socket) as? CInt,
                descriptor >= 0,
                let peer = Self.port(of: descriptor, peer: true), peer == channel.remoteAddress?.port,
                let local = Self.port(of: descriptor, peer: false), local == channel.localAddress?.port
            else { return nil }
            self.descriptor = descriptor
        #else
            return nil
        #endif
    }

    /// Writes what the socket takes now and moves `frame`'s reader past it. True when all of it went.
    func write(_ frame: inout ByteBuffer) -> Bool {
        #if canImport(Glibc) || canImport(Musl)
            let count = frame.readableBytes
            let written = frame.withUnsafeReadableBytes { bytes in
                send(descriptor, bytes.baseAddress, bytes.count, CInt(MSG_NOSIGNAL))
            }
            guard written > 0 else { return false }  // EAGAIN, EINTR or an error: NIO retries and handles it
            frame.moveReaderIndex(forwardBy: written)
            return written == count
        #else
            return false
        #endif
    }

    /// Writes what the socket takes of the first `framesPerCall` frames, in order, with one `writev(2)`;
    /// returns the number of bytes it took (0 when none: the socket is full, or an error NIO will meet
    /// again). The storage of each frame is retained across the call, as NIO does for its vector writes.
    func write(_ frames: [ByteBuffer]) -> Int {
        #if canImport(Glibc) || canImport(Musl)
            let frames = frames.prefix(Self.framesPerCall)
            return withUnsafeTemporaryAllocation(of: iovec.self, capacity: frames.count) { vectors in
                withUnsafeTemporaryAllocation(of: Unmanaged<AnyObject>.self, capacity: frames.count) { storages in
                    for (index, frame) in zip(0..., frames) {
                        frame.withUnsafeReadableBytesWithStorageManagement { bytes, storage in
                            storages[index] = storage.retain()
                            vectors[index] = iovec(
                                iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
                        }
                    }
                    let written = writev(descriptor, vectors.baseAddress, CInt(frames.count))
                    for index in 0..<frames.count { storages[index].release() }
                    return max(written, 0)
                }
            }
        #else
            return 0
        #endif
    }

    /// Frames per `writev`: the connection flushes its waiting frames at this count.
    static let framesPerCall = 64

    private static func storedProperty(_ name: String, of subject: Any) -> Any? {
        var mirror: Mirror? = Mirror(reflecting: subject)
        while let current = mirror {
            if let child = current.children.first(where: { $0.label == name }) { return child.value }
            mirror = current.superclassMirror
        }
        return nil
    }

    private static func port(of descriptor: CInt, peer: Bool) -> Int? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                peer ? getpeername(descriptor, $0, &length) : getsockname(descriptor, $0, &length)
            }
        }
        guard result == 0, CInt(storage.ss_family) == AF_INET || CInt(storage.ss_family) == AF_INET6 else {
            return nil
        }
        // sin_port and sin6_port both sit right after the family, in network byte order.
        return withUnsafeBytes(of: storage) { Int(UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self))) }
    }
}
