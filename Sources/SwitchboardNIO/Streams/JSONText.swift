/// JSON text the hub writes itself (error bodies, the protocol's messages).
public enum JSONText {
    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// A JSON string literal (RFC 8259: quote, backslash and control characters escaped). By hand: it
    /// runs for every publication's push, where Foundation's serializer cost more than the rest of it.
    public static func quote(_ string: String) -> String {
        let utf8 = string.utf8
        guard utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) else { return "\"" + string + "\"" }
        var out: [UInt8] = [0x22]
        out.reserveCapacity(utf8.count + 8)
        for byte in utf8 {
            switch byte {
            case 0x22: out += [0x5C, 0x22]
            case 0x5C: out += [0x5C, 0x5C]
            case 0x0A: out += [0x5C, 0x6E]
            case 0x0D: out += [0x5C, 0x72]
            case 0x09: out += [0x5C, 0x74]
            case 0x08: out += [0x5C, 0x62]
            case 0x0C: out += [0x5C, 0x66]
            case ..<0x20:
                out += [0x5C, 0x75, 0x30, 0x30, hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 0x0F)]]
            default: out.append(byte)
            }
        }
        out.append(0x22)
        return String(decoding: out, as: UTF8.self)
    }
}
