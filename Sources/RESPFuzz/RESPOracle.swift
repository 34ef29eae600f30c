import NIOCore
import SignalRedis

/// What the RESP fuzz target checks for every input, besides "never crashes, never hangs":
///
/// - Decoding the input in one buffer and decoding it as it would arrive over a socket, in chunks cut
///   at input-dependent places (the decoder is resumable), give the same values in the same order and
///   end the same way (a protocol error, or waiting for more bytes). A value is never produced twice
///   and nothing is parsed differently because it arrived in pieces.
/// - A decoder that threw is not used again (as the connection does), and one that returned nil holds
///   no more than the input.
///
/// Limits are small (64 KiB bulk strings and lines, 4,096 elements per aggregate) so that libFuzzer's
/// inputs reach them; the decoder's own defaults are only larger numbers for the same checks.
enum RESPOracle {
    static let limits: RESPDecoder.Limits = {
        var limits = RESPDecoder.Limits()
        limits.maxBulkLength = 64 * 1024
        limits.maxLineLength = 64 * 1024
        limits.maxAggregateLength = 4096
        limits.maxDepth = 64
        return limits
    }()

    enum Outcome: Equatable {
        case needsMore
        case protocolError
    }

    struct Run: Equatable {
        var values: [[UInt8]]
        var outcome: Outcome
    }

    /// Checks one input and returns a short name for its outcome (for the standalone loop's summary).
    @discardableResult
    static func check(_ input: UnsafeRawBufferPointer) -> String {
        let whole = decode(input, chunkSizes: [])
        // Chunk sizes from the input itself, so that libFuzzer controls them too: 1..16 bytes.
        var sizes: [Int] = []
        var seed: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in input.prefix(64) { seed = (seed ^ UInt64(byte)) &* 0x100_0000_01B3 }
        for _ in 0..<max(1, input.count / 4) {
            sizes.append(Int(seed % 16) + 1)
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        }
        let chunked = decode(input, chunkSizes: sizes)
        guard whole == chunked else {
            fatalError(
                "RESP decoded differently in chunks: whole \(whole.values.count) values, \(whole.outcome);"
                    + " chunked \(chunked.values.count) values, \(chunked.outcome)"
            )
        }
        let byteByByte = decode(input, chunkSizes: [1])
        guard whole == byteByByte else {
            fatalError("RESP decoded differently byte by byte: \(whole.outcome) vs \(byteByByte.outcome)")
        }
        let first = whole.values.first.map { Self.kinds[Int($0[0])] } ?? "none"
        return "\(whole.outcome == .protocolError ? "error" : "ok"):\(first)"
    }

    /// Feeds `input` to one decoder in chunks of `chunkSizes` (cycled; empty = all at once), the way
    /// `ByteToMessageHandler` does: append, decode until nil, go on.
    static func decode(_ input: UnsafeRawBufferPointer, chunkSizes: [Int]) -> Run {
        var decoder = RESPDecoder(limits: limits)
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        var values: [[UInt8]] = []
        var offset = 0
        var chunk = 0
        while offset < input.count || (offset == 0 && input.isEmpty) {
            let size = chunkSizes.isEmpty ? input.count : chunkSizes[chunk % chunkSizes.count]
            chunk += 1
            let end = min(input.count, offset + size)
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: input[offset..<end]))
            offset = end
            do {
                while let value = try decoder.decode(&buffer) {
                    values.append(fingerprint(value))
                    guard values.count <= input.count else { fatalError("more values than input bytes") }
                }
            } catch {
                return Run(values: values, outcome: .protocolError)
            }
            if buffer.readerIndex > 1024 { buffer.discardReadBytes() }
            if input.isEmpty { break }
        }
        guard buffer.readableBytes <= input.count else { fatalError("decoder holds more bytes than it was given") }
        return Run(values: values, outcome: .needsMore)
    }

    /// A canonical encoding of a value: a tag, then its bytes or elements (doubles by bit pattern, so NaN
    /// equals itself; map entries sorted).
    static func fingerprint(_ value: RESPValue) -> [UInt8] {
        var out: [UInt8] = []
        append(value, to: &out)
        return out
    }

    static func append(_ value: RESPValue, to out: inout [UInt8]) {
        func bytes(_ tag: UInt8, _ buffer: ByteBuffer) {
            out.append(tag)
            append(buffer.readableBytes, to: &out)
            out.append(contentsOf: buffer.readableBytesView)
        }
        func elements(_ tag: UInt8, _ values: [RESPValue]) {
            out.append(tag)
            append(values.count, to: &out)
            for value in values { append(value, to: &out) }
        }
        switch value {
        case .simpleString(let b): bytes(1, b)
        case .error(let b): bytes(2, b)
        case .integer(let i):
            out.append(3)
            append(i, to: &out)
        case .bulkString(let b): bytes(4, b)
        case .null: out.append(5)
        case .array(let a): elements(6, a)
        case .set(let a): elements(7, a)
        case .push(let a): elements(8, a)
        case .map(let m):
            out.append(9)
            append(m.count, to: &out)
            let entries = m.map { fingerprint($0.key) + fingerprint($0.value) }
            for entry in entries.sorted(by: { $0.lexicographicallyPrecedes($1) }) { out += entry }
        case .boolean(let b): out += [10, b ? 1 : 0]
        case .double(let d):
            out.append(11)
            append(Int(bitPattern: UInt(d.bitPattern)), to: &out)
        case .bigNumber(let b): bytes(12, b)
        }
    }

    static func append(_ number: Int, to out: inout [UInt8]) {
        withUnsafeBytes(of: number.bigEndian) { out.append(contentsOf: $0) }
    }

    /// Names of the fingerprint tags.
    static let kinds = [
        "", "simple", "error", "int", "bulk", "null", "array", "set", "push", "map", "bool", "double", "big",
    ]
}
