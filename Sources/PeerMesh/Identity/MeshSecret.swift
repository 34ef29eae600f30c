import Crypto
import Foundation

/// The secret shared by every node of one mesh. A node proves it knows the secret when it opens a
/// link (see `LinkAuthenticator`); a node without it cannot join.
public struct MeshSecret: Sendable {
    let key: SymmetricKey

    /// At least 32 bytes, so the secret is as strong as the HMAC-SHA256 that uses it.
    public init(bytes: [UInt8]) throws(MeshIdentityError) {
        guard bytes.count >= 32 else { throw MeshIdentityError("a mesh secret must be at least 32 bytes") }
        key = SymmetricKey(data: bytes)
    }
}

/// A refused identity input: what was wrong and what to do.
public struct MeshIdentityError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
