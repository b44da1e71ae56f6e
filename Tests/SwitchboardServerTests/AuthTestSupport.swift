import Crypto
import Foundation
import Hummingbird
import JWTKit
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardServer
import _CryptoExtras

/// The claims tests put in tokens; nil fields are left out.
struct TestClaims: JWTPayload {
    var sub: String?
    var exp: Double?
    var nbf: Double?
    var iat: Double?
    var aud: String?
    var iss: String?
    var info: [String: String]?
    var channels: [String]?
    var channel: String?

    init(
        sub: String?, ttl: Double? = 60, nbf: Double? = nil, info: [String: String]? = nil, channels: [String]? = nil,
        channel: String? = nil, aud: String? = nil, iss: String? = nil, exp: Double? = nil
    ) {
        self.sub = sub
        self.aud = aud
        self.iss = iss
        self.exp = exp ?? ttl.map { Date().timeIntervalSince1970 + $0 }
        self.nbf = nbf
        self.info = info
        self.channels = channels
        self.channel = channel
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Signing keys for tests, with the server-side configuration that verifies them.
enum TestKeys {
    static let secret = "a-test-secret-of-at-least-32-bytes-for-hs256"
    static let otherSecret = "another-secret-the-server-does-not-know-000"

    static func hmac(_ secret: String = secret, kid: String? = nil) async -> JWTKeyCollection {
        await JWTKeyCollection().add(
            hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: kid.map { JWKIdentifier(string: $0) })
    }

    static func sign(_ claims: TestClaims, with keys: JWTKeyCollection, kid: String? = nil) async throws -> String {
        try await keys.sign(claims, kid: kid.map { JWKIdentifier(string: $0) })
    }

    /// An unsigned token (`alg: none`), which must never pass.
    static func unsigned(_ claims: TestClaims) throws -> String {
        let header = Data(#"{"alg":"none","typ":"JWT"}"#.utf8)
        let payload = try JSONEncoder().encode(claims)
        return "\(base64URL(header)).\(base64URL(payload))."
    }

    /// An HS256 token with a header of the test's own (jwt-kit writes only the usual fields).
    static func hs256(_ claims: some Encodable, header: String, secret: String = secret) throws -> String {
        let signed = "\(base64URL(Data(header.utf8))).\(base64URL(try JSONEncoder().encode(claims)))"
        let mac = HMAC<SHA256>.authenticationCode(for: Data(signed.utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return "\(signed).\(base64URL(Data(mac)))"
    }

    static func base64URL(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// An EC P-256 key pair: the signer, the public PEM, and the public key as a JWK.
    static func ec(kid: String) async throws -> (
        signer: JWTKeyCollection, pem: String, jwk: String, key: P256.Signing.PrivateKey
    ) {
        let key = P256.Signing.PrivateKey()
        let signer = await JWTKeyCollection().add(
            ecdsa: try ES256PrivateKey(backing: key), kid: JWKIdentifier(string: kid))
        let raw = key.publicKey.rawRepresentation
        let jwk = """
            {"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"\(kid)","x":"\(base64URL(raw.prefix(32)))",\
            "y":"\(base64URL(raw.suffix(32)))"}
            """
        return (signer, key.publicKey.pemRepresentation, jwk, key)
    }

    static func rsa() async throws -> (signer: JWTKeyCollection, pem: String) {
        let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let signer = await JWTKeyCollection().add(
            rsa: try Insecure.RSA.PrivateKey(backing: key), digestAlgorithm: .sha256)
        return (signer, key.publicKey.pemRepresentation)
    }
}

/// Serves a JWKS over HTTP on loopback, counting the fetches; the key set can change under it.
final class JWKSServer: Sendable {
    // Lock: guards the served keys and the fetch count, changed by tests while the server answers.
    private let state = NIOLockedValueBox((keys: [String](), fetches: 0))
    private let task: NIOLockedValueBox<Task<Void, any Error>?> = .init(nil)
    let url: String

    private init(url: String) { self.url = url }

    static func start(keys: [String]) async throws -> JWKSServer {
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let box = NIOLockedValueBox<JWKSServer?>(nil)
        let router = Router()
        router.get("jwks") { _, _ -> Response in
            let keys = box.withLockedValue { $0 }?.serve() ?? []
            let body = "{\"keys\":[\(keys.joined(separator: ","))]}"
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) })
        let task = Task { try await app.runService() }
        var iterator = ports.makeAsyncIterator()
        let port = await iterator.next() ?? 0
        let server = JWKSServer(url: "http://127.0.0.1:\(port)/jwks")
        server.state.withLockedValue { $0.keys = keys }
        box.withLockedValue { $0 = server }
        server.task.withLockedValue { $0 = task }
        return server
    }

    private func serve() -> [String] {
        state.withLockedValue {
            $0.fetches += 1
            return $0.keys
        }
    }

    var fetches: Int { state.withLockedValue { $0.fetches } }
    func setKeys(_ keys: [String]) { state.withLockedValue { $0.keys = keys } }

    func stop() async {
        let task = self.task.withLockedValue { $0 }
        task?.cancel()
        _ = await task?.result
    }
}

extension AuthConfiguration {
    /// The test secret, no leeway (expiry tests count seconds), anonymous refused.
    static func testDefaults(_ configure: (inout AuthConfiguration) -> Void = { _ in }) -> AuthConfiguration {
        var auth = AuthConfiguration()
        auth.keys = [.hmac(secret: TestKeys.secret)]
        auth.rules.leeway = 0
        auth.allowAnonymous = false
        configure(&auth)
        return auth
    }
}
