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
/// The descriptor is known because the server accepts connections itself (`Acceptor`). It is written only
/// on the channel's loop while the channel is active: NIO closes a descriptor on that loop and marks the
/// channel inactive before anything else runs, and the number may be another socket's right after.
package struct DirectSocket {
    let descriptor: CInt
    /// Asked before every write: an inactive channel's descriptor is closed, or soon will be.
    let channel: any Channel

    /// The socket of a plain TCP channel (not for TLS: those bytes must pass the TLS handler).
    package init(descriptor: CInt, channel: any Channel) {
        self.descriptor = descriptor
        self.channel = channel
    }

    #if canImport(Darwin)
        /// NIO turns SIGPIPE off on the socket itself there (`F_SETNOSIGPIPE`).
        private static let sendFlags: CInt = 0
    #else
        private static let sendFlags = CInt(MSG_NOSIGNAL)
    #endif

    /// Writes what the socket takes now and moves `frame`'s reader past it. True when all of it went.
    func write(_ frame: inout ByteBuffer) -> Bool {
        channel.eventLoop.assertInEventLoop()
        guard channel.isActive else { return false }
        let count = frame.readableBytes
        let written = frame.withUnsafeReadableBytes { bytes in
            send(descriptor, bytes.baseAddress, bytes.count, Self.sendFlags)
        }
        guard written > 0 else { return false }  // EAGAIN, EINTR or an error: NIO retries and handles it
        frame.moveReaderIndex(forwardBy: written)
        return written == count
    }

    /// Writes what the socket takes of the first `framesPerCall` frames, in order, with one `writev(2)`;
    /// returns the number of bytes it took (0 when none: the socket is full, or an error NIO will meet
    /// again). The storage of each frame is retained across the call, as NIO does for its vector writes.
    func write(_ frames: [ByteBuffer]) -> Int {
        channel.eventLoop.assertInEventLoop()
        guard channel.isActive else { return 0 }
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
    }

    /// Frames per `writev`: the connection flushes its waiting frames at this count.
    static let framesPerCall = 64
}
