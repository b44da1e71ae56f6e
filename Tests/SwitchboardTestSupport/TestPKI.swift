import Foundation
import NIOSSL

/// Certificates made at test time with Debian's openssl: a CA, and server certificates it signs.
public struct TestPKI {
    /// A fresh temporary directory holding every file made; nothing removes it.
    public let directory: URL

    /// Creates the empty directory; `authority(_:)` and `server(_:signedBy:days:)` fill it.
    public init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-tls-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    /// The full path of `name` in `directory`, whether or not the file exists yet.
    public func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// Runs /usr/bin/openssl with `arguments` and waits for it; throws `OpenSSLFailed` on a nonzero exit.
    public func run(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw OpenSSLFailed(arguments: arguments) }
    }

    /// A self-signed CA named `name` (`name`.pem, `name`.key).
    public func authority(_ name: String) throws {
        try run([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            path("\(name).key"), "-out", path("\(name).pem"), "-days", "2", "-subj", "/CN=\(name)",
        ])
    }

    /// A certificate for localhost and 127.0.0.1 signed by `authority` (or self-signed when nil), valid for
    /// `days` (0: already expired).
    public func server(_ name: String, signedBy authority: String?, days: Int = 2) throws {
        try run([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            path("\(name).key"), "-out", path("\(name).csr"), "-subj", "/CN=localhost",
        ])
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(
            toFile: path("ext.cnf"), atomically: true, encoding: .utf8)
        let signer =
            authority.map { ["-CA", path("\($0).pem"), "-CAkey", path("\($0).key"), "-CAcreateserial"] }
            ?? ["-signkey", path("\(name).key")]
        try run(
            ["x509", "-req", "-in", path("\(name).csr"), "-out", path("\(name).pem"), "-days", "\(days)"] + signer + [
                "-extfile", path("ext.cnf"),
            ])
    }

    /// Puts `name`'s certificate and key where the server reads them.
    public func install(_ name: String) throws {
        for ext in ["pem", "key"] {
            let target = path("live.\(ext)")
            try? FileManager.default.removeItem(atPath: target)
            try FileManager.default.copyItem(atPath: path("\(name).\(ext)"), toPath: target)
        }
    }

    /// A client context that trusts only `authority`.
    public func trusting(_ authority: String) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(path("\(authority).pem")))
        return try NIOSSLContext(configuration: configuration)
    }
}

/// An openssl command exited with a nonzero status; its arguments show in the test failure.
public struct OpenSSLFailed: Error {
    let arguments: [String]
}
