/// The binary form of everything nodes send each other over a link, matching the `wireSize` each type
/// declares: a type byte, then big-endian fixed-size fields and UInt16-length-prefixed strings (the
/// transport adds the 4-byte frame length). Decoding checks every length and refuses trailing bytes.
public enum MeshWire {
    /// Largest frame a node accepts (a signal carries at most one 64 KiB v1 message).
    public static let maxFrameBytes = 1 << 20

    // MARK: Encoding

    public static func encode(_ message: MeshMessage) -> [UInt8] {
        var writer = ByteWriter()
        switch message {
        case .membership(let membership):
            writer.write(UInt8(1))
            write(membership, to: &writer)
        case .store(let batch, let records):
            writer.write(UInt8(2))
            writer.write(batch)
            writer.write(UInt16(records.count))
            for record in records { writer.write(raw: record.encoded()) }
        case .storeAck(let batch):
            writer.write(UInt8(3))
            writer.write(batch)
        case .signal(let signal):
            writer.write(UInt8(4))
            write(signal, to: &writer)
        case .hopAck(let key, let status, let location):
            writer.write(UInt8(5))
            write(key, to: &writer)
            writer.write(status.rawValue)
            if let location {
                writer.write(UInt8(1))
                writer.write(raw: location.encoded())
            } else {
                writer.write(UInt8(0))
            }
        case .undeliverable(let key):
            writer.write(UInt8(6))
            write(key, to: &writer)
        }
        return writer.bytes
    }

    static func write(_ message: MembershipMessage, to writer: inout ByteWriter) {
        switch message {
        case .ping(let probe, let updates):
            writer.write(UInt8(1))
            writer.write(probe)
            write(updates, to: &writer)
        case .pingRequest(let probe, let target, let updates):
            writer.write(UInt8(2))
            writer.write(probe)
            writer.write(raw: target.bytes)
            write(updates, to: &writer)
        case .ack(let probe, let updates):
            writer.write(UInt8(3))
            writer.write(probe)
            write(updates, to: &writer)
        case .join(let update):
            writer.write(UInt8(4))
            write(update, to: &writer)
        case .joinReply(let members):
            writer.write(UInt8(5))
            write(members, to: &writer)
        case .gossip(let updates):
            writer.write(UInt8(6))
            write(updates, to: &writer)
        case .announce(let update):
            writer.write(UInt8(7))
            write(update, to: &writer)
        }
    }

    static func write(_ updates: [MemberUpdate], to writer: inout ByteWriter) {
        writer.write(UInt16(updates.count))
        for update in updates { write(update, to: &writer) }
    }

    static func write(_ update: MemberUpdate, to writer: inout ByteWriter) {
        writer.write(raw: update.node.bytes)
        writer.write(update.incarnation)
        writer.write(update.status.rawValue)
        writer.write(string: update.address)
        if let proof = update.proof {
            writer.write(UInt8(1))
            writer.write(raw: proof.signer)
            writer.write(raw: proof.signature)
        } else {
            writer.write(UInt8(0))
        }
    }

    static func write(_ key: SignalKey, to writer: inout ByteWriter) {
        writer.write(raw: key.origin.bytes)
        writer.write(key.id)
    }

    static func write(_ signal: MeshSignal, to writer: inout ByteWriter) {
        writer.write(raw: signal.origin.bytes)
        writer.write(signal.id)
        writer.write(string: signal.from)
        switch signal.target {
        case .peer(let peer):
            writer.write(UInt8(0))
            writer.write(string: peer)
        case .room(let room):
            writer.write(UInt8(1))
            writer.write(string: room)
        case .peers(let peers):
            writer.write(UInt8(2))
            writer.write(UInt16(peers.count))
            for peer in peers { writer.write(string: peer) }
        }
        writer.write(signal.route.rawValue)
        writer.write(signal.hops)
        writer.write(UInt32(signal.payload.count))
        writer.write(raw: signal.payload)
        if let credential = signal.credential {
            writer.write(UInt8(1))
            writer.write(raw: credential.sender.encoded())
            writer.write(raw: credential.signature)
        } else {
            writer.write(UInt8(0))
        }
    }

    // MARK: Decoding

    public static func decode(_ bytes: [UInt8]) throws(MeshDecodingError) -> MeshMessage {
        var reader = ByteReader(bytes)
        let message: MeshMessage
        switch try reader.readByte() {
        case 1:
            message = .membership(try readMembership(&reader))
        case 2:
            let batch = try reader.readUInt32()
            let count = Int(try reader.readUInt16())
            var records: [SignedRecord] = []
            records.reserveCapacity(min(count, 256))
            for _ in 0..<count { records.append(try readRecord(&reader)) }
            message = .store(batch: batch, records: records)
        case 3:
            message = .storeAck(batch: try reader.readUInt32())
        case 4:
            message = .signal(try readSignal(&reader))
        case 5:
            let key = try readKey(&reader)
            guard let status = HopStatus(rawValue: try reader.readByte()) else {
                throw MeshDecodingError("unknown hop status")
            }
            let location: SignedRecord?
            switch try reader.readByte() {
            case 0: location = nil
            case 1: location = try readRecord(&reader)
            default: throw MeshDecodingError("bad location flag")
            }
            message = .hopAck(key, status, location: location)
        case 6:
            message = .undeliverable(try readKey(&reader))
        default:
            throw MeshDecodingError("unknown mesh message type")
        }
        guard reader.isAtEnd else { throw MeshDecodingError("trailing bytes after a mesh message") }
        return message
    }

    static func readMembership(_ reader: inout ByteReader) throws(MeshDecodingError) -> MembershipMessage {
        switch try reader.readByte() {
        case 1: return .ping(probe: try reader.readUInt32(), updates: try readUpdates(&reader))
        case 2:
            let probe = try reader.readUInt32()
            let target = MeshKey(bytes: try reader.read(count: 32))
            return .pingRequest(probe: probe, target: target, updates: try readUpdates(&reader))
        case 3: return .ack(probe: try reader.readUInt32(), updates: try readUpdates(&reader))
        case 4: return .join(try readUpdate(&reader))
        case 5: return .joinReply(members: try readUpdates(&reader))
        case 6: return .gossip(updates: try readUpdates(&reader))
        case 7: return .announce(try readUpdate(&reader))
        default: throw MeshDecodingError("unknown membership message type")
        }
    }

    static func readUpdates(_ reader: inout ByteReader) throws(MeshDecodingError) -> [MemberUpdate] {
        let count = Int(try reader.readUInt16())
        var updates: [MemberUpdate] = []
        updates.reserveCapacity(min(count, 256))
        for _ in 0..<count { updates.append(try readUpdate(&reader)) }
        return updates
    }

    static func readUpdate(_ reader: inout ByteReader) throws(MeshDecodingError) -> MemberUpdate {
        let node = MeshKey(bytes: try reader.read(count: 32))
        let incarnation = try reader.readUInt32()
        guard let status = MemberUpdate.Status(rawValue: try reader.readByte()) else {
            throw MeshDecodingError("unknown member status")
        }
        let address = try reader.readString()
        let proof: MemberProof?
        switch try reader.readByte() {
        case 0: proof = nil
        case 1: proof = MemberProof(signer: try reader.read(count: 32), signature: try reader.read(count: 64))
        default: throw MeshDecodingError("bad member proof flag")
        }
        return MemberUpdate(node: node, address: address, incarnation: incarnation, status: status, proof: proof)
    }

    static func readRecord(_ reader: inout ByteReader) throws(MeshDecodingError) -> SignedRecord {
        let signer = try reader.read(count: 32)
        let length = Int(try reader.readUInt16())
        let body = try reader.read(count: length)
        let signature = try reader.read(count: 64)
        return SignedRecord(signer: signer, body: body, signature: signature)
    }

    static func readKey(_ reader: inout ByteReader) throws(MeshDecodingError) -> SignalKey {
        SignalKey(origin: MeshKey(bytes: try reader.read(count: 32)), id: try reader.readUInt64())
    }

    static func readSignal(_ reader: inout ByteReader) throws(MeshDecodingError) -> MeshSignal {
        let origin = MeshKey(bytes: try reader.read(count: 32))
        let id = try reader.readUInt64()
        let from = try reader.readString()
        let target: MeshSignal.Target
        switch try reader.readByte() {
        case 0: target = .peer(try reader.readString())
        case 1: target = .room(try reader.readString())
        case 2:
            let count = Int(try reader.readUInt16())
            var peers: [String] = []
            peers.reserveCapacity(min(count, 256))
            for _ in 0..<count { peers.append(try reader.readString()) }
            target = .peers(peers)
        default: throw MeshDecodingError("unknown signal target")
        }
        guard let route = MeshSignal.Route(rawValue: try reader.readByte()) else {
            throw MeshDecodingError("unknown route")
        }
        let hops = try reader.readByte()
        let length = Int(try reader.readUInt32())
        guard length <= maxFrameBytes else { throw MeshDecodingError("signal payload too large") }
        let payload = try reader.read(count: length)
        let credential: SignalCredential?
        switch try reader.readByte() {
        case 0: credential = nil
        case 1: credential = SignalCredential(sender: try readRecord(&reader), signature: try reader.read(count: 64))
        default: throw MeshDecodingError("bad signal credential flag")
        }
        return MeshSignal(
            origin: origin,
            id: id,
            from: from,
            target: target,
            route: route,
            hops: hops,
            payload: payload,
            credential: credential
        )
    }
}
