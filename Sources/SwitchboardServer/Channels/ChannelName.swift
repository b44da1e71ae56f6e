/// Channel names: 1–255 characters from `A-Z a-z 0-9 _ - . : @ / = # ,`; the part before the first `:`
/// is the namespace (`chat:lobby` → `chat`), and a name without `:` is in the default namespace "".
/// After a `#` come the only users who may use the channel (`dm:#alice,bob`).
public enum ChannelName {
    static let maxLength = 255

    /// Whether `name` is a well-formed channel name (length and characters only; the namespace must still exist).
    public static func validate(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= maxLength else { return false }
        return name.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"):
                return true
            default:
                return "_-.:@/=#,".utf8.contains(byte)
            }
        }
    }

    /// A namespace is a channel name's prefix, so it follows the same rules, without `:`.
    static func validNamespace(_ name: String) -> Bool {
        validate(name) && !name.contains(":") && !name.contains("#")
    }

    static func namespace(of name: String) -> String {
        name.firstIndex(of: ":").map { String(name[..<$0]) } ?? ""
    }
}
