import NIOConcurrencyHelpers
import NIOSSL

/// The server's certificate chain and private key, read from PEM files and reloadable while serving: each
/// new connection takes the context current when it is accepted; connections already open keep their
/// session. TLS 1.2 at least, swift-nio-ssl's modern cipher defaults, ALPN `http/1.1`.
public final class TLSCertificates: Sendable {
    /// PEM file holding the certificate chain, leaf first; read again by `reload()`.
    public let certificatePath: String
    /// PEM file holding the private key of the leaf certificate; read again by `reload()`.
    public let keyPath: String
    // Lock: guards the current context, replaced whole by `reload`.
    private let current: NIOLockedValueBox<NIOSSLContext>

    /// - Throws: `TLSFileError` naming the file and the reason (unreadable, not PEM, key not matching).
    public init(certificatePath: String, keyPath: String) throws {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        current = NIOLockedValueBox(try Self.load(certificatePath: certificatePath, keyPath: keyPath))
    }

    var context: NIOSSLContext { current.withLockedValue { $0 } }

    /// Reads the files again. If they are bad, the certificate in use stays and the error says why.
    public func reload() throws {
        let context = try Self.load(certificatePath: certificatePath, keyPath: keyPath)
        current.withLockedValue { $0 = context }
    }

    private static func load(certificatePath: String, keyPath: String) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        } catch {
            throw TLSFileError(path: certificatePath, reason: "not a readable PEM certificate chain (\(error))")
        }
        guard !chain.isEmpty else { throw TLSFileError(path: certificatePath, reason: "no certificate in the file") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw TLSFileError(path: keyPath, reason: "not a readable PEM private key (\(error))")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["http/1.1"]
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSFileError(path: keyPath, reason: "does not fit the certificate or cannot be used (\(error))")
        }
    }
}

/// A certificate or key file that cannot be used, with the path and the reason.
public struct TLSFileError: Error, CustomStringConvertible {
    /// The file that could not be used (the key file when key and certificate do not fit together).
    public let path: String
    /// What is wrong with it, for an operator to read.
    public let reason: String
    /// `path: reason`.
    public var description: String { "\(path): \(reason)" }
}
