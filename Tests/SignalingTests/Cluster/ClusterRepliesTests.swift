import NIOCore
import Testing

@testable import Signaling

/// The cluster scripts' replies decoded into typed values, without Redis: every shape a script gives,
/// and nil for anything else.
@Suite struct ClusterRepliesTests {
    func bulk(_ text: String) -> RESPValue { .bulkString(ByteBuffer(string: text)) }
    func array(_ values: RESPValue...) -> RESPValue { .array(values) }

    @Test func createReplies() {
        #expect(CreateReply(array(bulk("created"))) == .created)
        #expect(CreateReply(array(bulk("taken"))) == .taken)
        let tookOver = CreateReply(
            array(bulk("took-over"), bulk("a,b"), array(bulk("bob|offer|o1"), bulk("eve|message|")))
        )
        #expect(
            tookOver
                == .tookOver(
                    EndedSession(
                        rooms: ["a", "b"],
                        origins: [
                            ExpiredOrigin(sender: "bob", type: .offer, id: "o1"),
                            ExpiredOrigin(sender: "eve", type: .message, id: nil),
                        ]
                    )
                )
        )
        #expect(
            CreateReply(array(bulk("took-over"), bulk(""), array())) == .tookOver(EndedSession(rooms: [], origins: []))
        )
        for junk in [array(), bulk("created"), array(bulk("took-over")), array(bulk("what")), .null] {
            #expect(CreateReply(junk) == nil, "\(junk)")
        }
    }

    @Test func resumeReplies() {
        #expect(ResumeReply(array(bulk("unknown"))) == .unknown)
        let reply = array(
            bulk("resumed"),
            .integer(1),
            bulk("12"),
            bulk("lobby,x"),
            bulk("lobby,x,y"),
            array(bulk("11"), bulk("m11"), bulk("12"), bulk("m12"))
        )
        #expect(
            ResumeReply(reply)
                == .resumed(
                    ResumeReply.ResumedSession(
                        gap: true,
                        seq: 12,
                        rooms: ["lobby", "x"],
                        grant: .only(["lobby", "x", "y"]),
                        replay: [
                            BufferedMessage(seq: 11, bytes: ByteBuffer(string: "m11")),
                            BufferedMessage(seq: 12, bytes: ByteBuffer(string: "m12")),
                        ]
                    )
                )
        )
        let empty = ResumeReply(array(bulk("resumed"), .integer(0), bulk("0"), bulk(""), bulk("*"), array()))
        #expect(empty == .resumed(ResumeReply.ResumedSession(gap: false, seq: 0, rooms: [], grant: .all, replay: [])))
        for junk in [
            array(bulk("resumed"), .integer(0), bulk("x"), bulk(""), bulk("*"), array()),
            array(bulk("resumed"), .integer(0), bulk("1"), bulk(""), bulk("*")),
            array(bulk("resumed"), .integer(0), bulk("1"), bulk(""), bulk("*"), bulk("not a list")),
        ] {
            #expect(ResumeReply(junk) == nil, "\(junk)")
        }
    }

    @Test func deliverReplies() {
        let delivered = DeliverReply(array(bulk("delivered"), bulk("n1#abc"), array()))
        #expect(delivered == DeliverReply(result: .delivered, node: "n1#abc"))
        let queued = DeliverReply(array(bulk("queued"), bulk("n2#x"), array(bulk("carol|candidate|c9"))))
        #expect(
            queued
                == DeliverReply(
                    result: .queued,
                    node: "n2#x",
                    expired: [ExpiredOrigin(sender: "carol", type: .candidate, id: "c9")]
                )
        )
        #expect(DeliverReply(array(bulk("dup"), bulk("queued"))) == DeliverReply(result: .queued, duplicate: true))
        #expect(
            DeliverReply(array(bulk("dup"), bulk("delivered"))) == DeliverReply(result: .delivered, duplicate: true)
        )
        for status in [DeliveryResult.unavailable, .notInRoom, .notShared, .queueFull] {
            #expect(DeliverReply(array(bulk(status.rawValue))) == DeliverReply(result: status))
        }
        for junk in [array(bulk("delivered")), array(bulk("nonsense")), array(bulk("dup")), .integer(1)] {
            #expect(DeliverReply(junk) == nil, "\(junk)")
        }
        // The one-string form the scripts give unless queued signals expired.
        #expect(DeliverReply(bulk("delivered n1#abc")) == DeliverReply(result: .delivered, node: "n1#abc"))
        #expect(DeliverReply(bulk("queued n2#x")) == DeliverReply(result: .queued, node: "n2#x"))
        #expect(DeliverReply(bulk("dup queued")) == DeliverReply(result: .queued, duplicate: true))
        #expect(DeliverReply(bulk("dup delivered")) == DeliverReply(result: .delivered, duplicate: true))
        for status in [DeliveryResult.unavailable, .notInRoom, .notShared, .queueFull, .away] {
            #expect(DeliverReply(bulk(status.rawValue)) == DeliverReply(result: status))
        }
        for junk in ["delivered", "nonsense", "dup", "", "queued", "delivered ", "nonsense n1#abc"] {
            #expect(DeliverReply(bulk(junk)) == nil, "\(junk)")
        }
    }

    @Test func deliveryResultsMapOntoTheRoutingPolicysRefusals() {
        #expect(DeliveryResult.unavailable.refusal(recipient: "bob", room: nil) == .peerUnavailable("bob"))
        #expect(DeliveryResult.queueFull.refusal(recipient: "bob", room: nil) == .queueFull("bob"))
        #expect(
            DeliveryResult.notInRoom.refusal(recipient: "bob", room: "x") == .recipientNotInRoom(peer: "bob", room: "x")
        )
        #expect(DeliveryResult.notShared.refusal(recipient: "bob", room: nil) == .noSharedRoom("bob"))
    }

    @Test func endSinceTouchJoinAndLeaveReplies() {
        #expect(EndReply(array(bulk("gone"))) == .gone)
        #expect(EndReply(array(bulk("alive"))) == .alive)
        #expect(EndReply(array(bulk("ended"), bulk("r"), array())) == .ended(EndedSession(rooms: ["r"], origins: [])))
        #expect(EndReply(array(bulk("ended"))) == nil)

        #expect(SinceReply(array(bulk("gone"))) == .gone)
        #expect(
            SinceReply(array(bulk("ok"), array(bulk("3"), bulk("m3"))))
                == .missed([BufferedMessage(seq: 3, bytes: ByteBuffer(string: "m3"))])
        )
        #expect(SinceReply(array(bulk("ok"))) == nil)

        #expect(TouchReply(.integer(0)) == .gone)
        #expect(TouchReply(.integer(1)) == .refreshed)
        #expect(TouchReply(.integer(2)) == .movedElsewhere)
        #expect(TouchReply(.integer(3)) == nil)

        #expect(JoinReply(array(bulk("full"))) == .full)
        let joined = JoinReply(array(bulk("new"), array(bulk("alice"), bulk(""), bulk("bob"), bulk(#"{"n":1}"#))))
        #expect(
            joined
                == .joined(
                    isNew: true,
                    changed: false,
                    members: [
                        RoomMember(peer: "alice", meta: nil),
                        RoomMember(peer: "bob", meta: ByteBuffer(string: #"{"n":1}"#)),
                    ]
                )
        )
        #expect(JoinReply(array(bulk("again"), array())) == .joined(isNew: false, changed: false, members: []))
        #expect(JoinReply(array(bulk("changed"), array())) == .joined(isNew: false, changed: true, members: []))
        #expect(JoinReply(array(bulk("new"))) == nil)

        #expect(UpdateReply(array(bulk("absent"))) == .absent)
        #expect(
            UpdateReply(array(bulk("updated"), array(bulk("alice"), bulk("bob"))))
                == .updated(members: ["alice", "bob"])
        )
        #expect(UpdateReply(array(bulk("updated"))) == nil)

        // A volatile signal for an away session: refused as the policy refuses it.
        #expect(DeliverReply(array(bulk("away"))) == DeliverReply(result: .away))
        #expect(DeliveryResult.away.refusal(recipient: "bob", room: nil) == .recipientAway("bob"))

        #expect(LeaveReply(array(.integer(1), array(bulk("bob")))) == LeaveReply(removed: true, remaining: ["bob"]))
        #expect(LeaveReply(array(.integer(0))) == nil)
    }

    @Test func grantsRoundTripThroughTheirRedisForm() {
        #expect(RoomGrant.all.clusterString == "*")
        #expect(RoomGrant.only(["b", "a"]).clusterString == "a,b")
        #expect(RoomGrant(clusterString: "*") == .all)
        #expect(RoomGrant(clusterString: "a,b") == .only(["a", "b"]))
        #expect(RoomGrant(clusterString: "") == .only([]))
    }

    @Test func expiredOriginsAreReadOrSkipped() {
        #expect(ExpiredOrigin("bob|answer|a|b") == ExpiredOrigin(sender: "bob", type: .answer, id: "a|b"))
        #expect(ExpiredOrigin("bob|join|x") == nil)
        #expect(ExpiredOrigin("|offer|x") == nil)
        #expect(ExpiredOrigin("bob|offer") == nil)
    }
}
