import Foundation

/// One entry of `welcome`'s `iceServers`, in the shape of WebRTC's `RTCIceServer`: STUN/TURN URLs and,
/// for TURN, a username and credential.
public struct IceServer: Sendable, Equatable {
    public var urls: [String]
    public var username: String?
    public var credential: String?

    public init(urls: [String], username: String? = nil, credential: String? = nil) {
        self.urls = urls
        self.username = username
        self.credential = credential
    }

    /// Why an `--ice-server` value was refused.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// Parses the value of `--ice-server`:
    ///
    ///     URL[,URL…][;username=NAME;credential=SECRET]
    ///     URL[,URL…][;username=NAME;credential-file=PATH]
    ///
    /// Several URLs separated by commas form one entry (one `RTCIceServer` with several `urls`, e.g. the
    /// UDP, TCP and TLS addresses of one TURN server sharing one credential). A `turn:`/`turns:` URL needs a
    /// username and a credential (browsers refuse a TURN server without them); `credential-file` reads the
    /// credential from a file (first line), keeping it out of the process list. TURN URIs (RFC 7065) have
    /// neither `,` nor `;`, so the separators are unambiguous.
    public static func parse(
        _ value: String,
        readFile: (String) throws -> String = { try String(contentsOfFile: $0, encoding: .utf8) }
    ) throws(ParseError) -> IceServer {
        var parts = value.split(separator: ";", omittingEmptySubsequences: false).map(String.init)
        let urls = parts.removeFirst().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !urls.isEmpty, urls.allSatisfy({ !$0.isEmpty }) else {
            throw ParseError(description: "--ice-server \"\(value)\": no URL")
        }
        var server = IceServer(urls: urls)
        for part in parts {
            guard let equals = part.firstIndex(of: "=") else {
                throw ParseError(description: "--ice-server: expected name=value after ';', got \"\(part)\"")
            }
            let name = part[..<equals].trimmingCharacters(in: .whitespaces)
            let field = String(part[part.index(after: equals)...])
            switch name {
            case "username":
                server.username = field
            case "credential":
                server.credential = field
            case "credential-file":
                do {
                    let contents = try readFile(field)
                    server.credential = contents.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
                } catch {
                    throw ParseError(description: "--ice-server: cannot read credential-file \(field)")
                }
            default:
                throw ParseError(
                    description: "--ice-server: unknown field \"\(name)\" (username, credential, credential-file)"
                )
            }
        }
        for url in urls {
            guard let scheme = Self.scheme(of: url) else {
                throw ParseError(description: "--ice-server: \"\(url)\" is not a stun:, stuns:, turn: or turns: URL")
            }
            if scheme.hasPrefix("turn"), server.username == nil || server.credential == nil {
                throw ParseError(
                    description:
                        "--ice-server: \(url) needs ;username=…;credential=… (or use --turn-url with --turn-secret)"
                )
            }
        }
        if (server.username == nil) != (server.credential == nil) {
            throw ParseError(description: "--ice-server: username and credential go together")
        }
        return server
    }

    /// The lower-cased scheme of a STUN or TURN URL; nil for anything else.
    public static func scheme(of url: String) -> String? {
        guard let colon = url.firstIndex(of: ":") else { return nil }
        let scheme = url[..<colon].lowercased()
        return ["stun", "stuns", "turn", "turns"].contains(scheme) ? scheme : nil
    }

    /// The entry as JSON: `{"urls":"URL"}` for a single URL without credentials (as the hub always wrote
    /// it), else `{"urls":[…],"username":…,"credential":…}`.
    public var json: String {
        var out = "{\"urls\":"
        if urls.count == 1, username == nil {
            out += Self.quoted(urls[0])
        } else {
            out += "[" + urls.map(Self.quoted).joined(separator: ",") + "]"
        }
        if let username { out += ",\"username\":" + Self.quoted(username) }
        if let credential { out += ",\"credential\":" + Self.quoted(credential) }
        return out + "}"
    }

    /// A JSON array of `servers`.
    public static func json(_ servers: [IceServer]) -> String {
        "[" + servers.map(\.json).joined(separator: ",") + "]"
    }

    static func quoted(_ string: String) -> String {
        var out = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
