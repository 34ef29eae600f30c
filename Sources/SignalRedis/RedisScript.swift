import Crypto

/// A Lua script with its SHA-1, for ``RedisConnection/run(_:keys:arguments:timeout:)``, which calls it by
/// hash and sends the source only when the server has not cached it.
///
/// ```swift
/// /// Sets KEYS[1] to ARGV[2] only if it still holds ARGV[1] (compare-and-set).
/// static let compareAndSet = RedisScript("""
///     if redis.call('GET', KEYS[1]) == ARGV[1] then
///         return redis.call('SET', KEYS[1], ARGV[2])
///     end
///     return false
///     """)
/// let swapped = try await redis.run(Self.compareAndSet, keys: [key], arguments: [old, new])
/// ```
public struct RedisScript: Sendable, Hashable {
    /// The Lua source.
    public let source: String
    /// The lowercase hex SHA-1 of `source`, as `EVALSHA` and `SCRIPT LOAD` use it.
    public let sha1: String

    public init(_ source: String) {
        self.source = source
        let digest = Insecure.SHA1.hash(data: Array(source.utf8))
        let hexDigits = Array("0123456789abcdef".utf8)
        var hex: [UInt8] = []
        hex.reserveCapacity(40)
        for byte in digest {
            hex.append(hexDigits[Int(byte >> 4)])
            hex.append(hexDigits[Int(byte & 0x0F)])
        }
        sha1 = String(decoding: hex, as: UTF8.self)
    }
}
