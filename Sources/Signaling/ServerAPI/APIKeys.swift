import Crypto

/// The server API's keys (`--api-key-file`): who may call it, and in which tenant's namespace each key
/// acts. Several keys may be valid at once, so a key can be rotated without downtime (add the new one,
/// move the app's backend over, remove the old one).
///
/// Keys are compared in constant time: a presented key and each configured key are hashed (SHA-256) and the
/// digests compared byte by byte without an early exit, against every configured key, so neither a key's
/// bytes nor its length show in the time an answer takes.
public struct APIKeys: Sendable {
    /// One configured key.
    public struct Key: Sendable, Equatable {
        /// SHA-256 of the key (the key itself is not kept).
        let digest: [UInt8]
        /// The tenant the key acts in (the default tenant unless the line names one).
        public let tenant: Tenant
        /// The key's 1-based line in its file, to name it in logs and rate-limit it on its own.
        public let line: Int
    }

    /// Why a key file is refused; the description names the line and what is wrong with it.
    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// Shortest key accepted: 16 characters (a random key of that length is beyond guessing).
    public static let minimumKeyLength = 16

    public let keys: [Key]

    /// Reads a key file: one key per line, `KEY` (the default tenant) or `KEY TENANT`; blank lines and
    /// lines starting with `#` are ignored. A key is at least 16 printable ASCII characters without spaces.
    public init(file contents: String) throws(Invalid) {
        var keys: [Key] = []
        for (offset, raw) in contents.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated()
        {
            let line = raw.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            let number = offset + 1
            guard words.count <= 2 else {
                throw Invalid(description: "line \(number): expected KEY or KEY TENANT")
            }
            let key = String(words[0])
            guard key.utf8.count >= Self.minimumKeyLength, key.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw Invalid(
                    description: "line \(number): a key is at least \(Self.minimumKeyLength) printable ASCII characters"
                )
            }
            var tenant = Tenant.default
            if words.count == 2 {
                guard let named = Tenant(String(words[1])) else {
                    throw Invalid(
                        description:
                            "line \(number): a tenant is 1-\(Tenant.maxNameLength) characters of [A-Za-z0-9._~-]"
                    )
                }
                tenant = named
            }
            keys.append(Key(digest: Self.digest(key), tenant: tenant, line: number))
        }
        guard !keys.isEmpty else { throw Invalid(description: "no key in the file") }
        self.keys = keys
    }

    /// The configured key `presented` is, or nil. Every key is compared, whatever matched.
    public func match(_ presented: some StringProtocol) -> Key? {
        let digest = Self.digest(String(presented))
        var found: Key?
        for key in keys where Self.constantTimeEqual(digest, key.digest) {
            found = found ?? key
        }
        return found
    }

    /// The key of an `Authorization: Bearer KEY` header value, or nil.
    public func authorize(_ header: String?) -> Key? {
        guard let header else { return nil }
        let trimmed = header.trimmingWhitespace()
        guard trimmed.count > 7, trimmed.prefix(7).lowercased() == "bearer " else { return nil }
        return self.match(trimmed.dropFirst(7).trimmingWhitespace())
    }

    static func digest(_ key: String) -> [UInt8] {
        Array(SHA256.hash(data: Array(key.utf8)))
    }

    /// Equal without an early exit (both are digests of the same length).
    static func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
        return difference == 0
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces, tabs and carriage returns.
    func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        guard let start = self.firstIndex(where: { !isSpace($0) }) else { return "" }
        let end = self.lastIndex(where: { !isSpace($0) })!
        return String(self[start...end])
    }
}
