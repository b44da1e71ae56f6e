import Crypto
import Foundation
import NIOHTTP1
import PropertyBased
import SwitchboardNIO
import Testing

/// The upgrade's answer for any key: RFC 6455 §4.2.2's accept value for a key of 16 bytes, a refusal for
/// any other length.
@Suite("Handshake, property-based", .timeLimit(.minutes(5)))
struct HandshakeProperties {
    private func request(key: String) -> HTTPRequestHead {
        HTTPRequestHead(
            version: .http1_1, method: .GET, uri: "/ws",
            headers: [
                "Host": "127.0.0.1", "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
                "Sec-WebSocket-Version": "13",
            ])
    }

    @Test func theAcceptValueIsTheDigestOfAnySixteenByteKey() async {
        await propertyCheck(input: Gen.uint8().array(of: 0...24)) { bytes in
            let key = Data(bytes).base64EncodedString()
            let result = HandshakeValidator.validate(request(key: key), path: "/ws")
            if bytes.count == 16 {
                let digest = Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))
                #expect((try? result.get()) == Data(digest).base64EncodedString(), "\(key)")
            } else {
                #expect((try? result.get()) == nil, "\(key)")
            }
        }
    }
}
