import Crypto
import Foundation
import NIOCore
import NIOHTTP1

/// Files served over plain HTTP on the WebSocket listener (the demo and the dashboard), so a page and its
/// socket share an origin. Loaded once into memory and looked up by exact path: no request can name a file
/// that was not loaded, whatever `..` or encoding it uses.
public struct StaticSite: Sendable {
    struct File: Sendable {
        let body: ByteBuffer
        let contentType: String
        let etag: String

        /// The content type from the name's extension, the ETag from the contents.
        init(name: String, data: Data) {
            let digest = SHA256.hash(data: data).prefix(12).map { String(format: "%02x", $0) }.joined()
            body = ByteBuffer(bytes: data)
            contentType = StaticSite.contentType(of: name)
            etag = "\"\(digest)\""
        }
    }

    private let files: [String: File]

    /// Every regular file of `directory` at `/NAME`, plus `aliases` (`"/"` → `"index.html"`) and `generated`
    /// files made by the server (path → name and contents; the name gives the content type).
    public init(
        directory: URL, aliases: [String: String] = [:], generated: [String: (name: String, body: String)] = [:]
    )
        throws
    {
        var files: [String: File] = [:]
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        for name in names where !name.hasPrefix(".") {
            let url = directory.appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue
            else { continue }
            files["/" + name] = File(name: name, data: try Data(contentsOf: url.resolvingSymlinksInPath()))
        }
        for (path, name) in aliases { files[path] = files["/" + name] }
        for (path, file) in generated { files[path] = File(name: file.name, data: Data(file.body.utf8)) }
        self.files = files
    }

    struct Response {
        var status: HTTPResponseStatus
        var headers: HTTPHeaders
        var body: ByteBuffer?
        /// The body's length, also for HEAD (which sends none).
        var contentLength: Int { body?.readableBytes ?? 0 }
        var headLength: Int?
    }

    /// The answer to a request that is not a WebSocket upgrade: the file, 304 when the client's copy is
    /// current, 404 for anything else, 405 for methods other than GET and HEAD.
    func respond(to head: HTTPRequestHead) -> Response {
        guard head.method == .GET || head.method == .HEAD else {
            return Response(
                status: .methodNotAllowed, headers: ["Allow": "GET, HEAD"],
                body: ByteBuffer(string: "method not allowed\n"))
        }
        let path = String(head.uri.prefix { $0 != "?" && $0 != "#" })
        guard let file = files[path] else {
            return Response(
                status: .notFound, headers: [:], body: head.method == .HEAD ? nil : ByteBuffer(string: "not found\n"))
        }
        var headers: HTTPHeaders = [
            "ETag": file.etag,
            // Revalidated each time (a 304 is cheap): a new server version is picked up at once.
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            // No other site may frame the pages (clickjacking the demo's buttons).
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "frame-ancestors 'none'",
        ]
        if head.headers["If-None-Match"].contains(where: {
            $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.contains(file.etag)
        }) {
            return Response(status: .notModified, headers: headers, body: nil)
        }
        headers.add(name: "Content-Type", value: file.contentType)
        guard head.method == .GET else {
            return Response(status: .ok, headers: headers, body: nil, headLength: file.body.readableBytes)
        }
        return Response(status: .ok, headers: headers, body: file.body)
    }

    static func contentType(of name: String) -> String {
        switch name.split(separator: ".").last?.lowercased() ?? "" {
        case "html": return "text/html; charset=utf-8"
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "json": return "application/json"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "ico": return "image/x-icon"
        case "ts": return "text/plain; charset=utf-8"
        default: return "application/octet-stream"
        }
    }
}
