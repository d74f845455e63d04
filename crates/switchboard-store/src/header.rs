//! A conversation's header as stored under `conv/` since schema 7: a binary record instead of
//! JSON.
//!
//! A header is rewritten every time its conversation changes (at most once per projection
//! write), and read back whenever an event touches a conversation the writer does not hold.
//! As JSON it took 3.5 KB for the seed mix (field names, and a `[millis, hash]` stamp beside
//! every value), zstd brought it to about 1 KB, and encoding, compressing, decompressing and
//! parsing it cost about 40 µs of the writer's one thread per change. As this record it is
//! postcard behind the byte [`HEADER_RECORD`]: no field names, and every stamp once in a table
//! that the fields name by place (most of a header's stamps are the same few events'), then
//! zstd as any value (a seed-mix header's user agent, URLs and attributes still compress:
//! uncompressed, the record took 1,214 bytes against 1,039 for the compressed JSON).
//!
//! JSON headers (schemas 3 to 6) are still read; each becomes a record when it is next
//! written.

use serde::{Deserialize, Serialize};
use switchboard_core::{
    ConnectionId, Conversation, ConversationId, ConversationStatus, Lww, Participant,
    ParticipantFields, Rating, Segment, Stamp, ThreadStatus, Timestamp,
};

use crate::StoreError;
use crate::record::{decode, pack_fast, unpack};

/// The first byte of a header record (a JSON header starts with `{`, a packed one with the
/// zstd magic).
pub(crate) const HEADER_RECORD: u8 = 0x06;

#[derive(Serialize, Deserialize)]
struct HeaderRecord<'a> {
    connection: &'a str,
    external_id: &'a str,
    vendor: &'a str,
    /// [`ConversationStatus::ALL`]'s place.
    status: u8,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    updated_at: i64,
    /// Every stamp of the header, once: `(millis, hash)`; a `u32` below is a place in it.
    stamps: Vec<(i64, u64)>,
    end_reason: Option<(&'a str, u32)>,
    #[serde(borrow)]
    visitor: Option<(PersonRecord<'a>, u32)>,
    #[serde(borrow)]
    agents: Vec<(&'a str, Option<PersonRecord<'a>>, u32)>,
    assigned_agent: Option<(&'a str, u32)>,
    tags: Vec<(&'a str, bool, u32)>,
    #[serde(borrow)]
    rating: Option<(RatingRecord<'a>, u32)>,
    page_url: Option<(&'a str, u32)>,
    referrer: Option<(&'a str, u32)>,
    attributes: Vec<(&'a str, &'a str, u32)>,
    #[serde(borrow)]
    segments: Vec<(&'a str, SegmentRecord<'a>, u32)>,
    event_count: u64,
    #[serde(borrow)]
    participant_fields: Vec<(&'a str, FieldsRecord<'a>)>,
    /// A thread's id, status, start and first stamp.
    threads: Vec<(&'a str, u8, Option<i64>, u32)>,
}

#[derive(Serialize, Deserialize)]
struct PersonRecord<'a> {
    id: &'a str,
    name: Option<&'a str>,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    attributes: Vec<(&'a str, &'a str)>,
}

#[derive(Serialize, Deserialize)]
struct RatingRecord<'a> {
    score: Option<i64>,
    scale: Option<&'a str>,
    label: Option<&'a str>,
    comment: Option<&'a str>,
}

#[derive(Serialize, Deserialize)]
struct SegmentRecord<'a> {
    id: &'a str,
    #[serde(borrow)]
    agent: Option<PersonRecord<'a>>,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    #[serde(borrow)]
    rating: Option<RatingRecord<'a>>,
    attributes: Vec<(&'a str, &'a str)>,
}

#[derive(Serialize, Deserialize)]
struct FieldsRecord<'a> {
    id: Option<u32>,
    name: Option<u32>,
    email: Option<u32>,
    phone: Option<u32>,
    attributes: Vec<(&'a str, u32)>,
    #[serde(borrow)]
    parked: Option<PersonRecord<'a>>,
}

/// The stamps of a header being encoded.
#[derive(Default)]
struct Stamps(Vec<(i64, u64)>);

impl Stamps {
    fn place(&mut self, stamp: Stamp) -> u32 {
        let stamp = (stamp.0.as_millis(), stamp.1);
        let place = match self.0.iter().position(|s| *s == stamp) {
            Some(place) => place,
            None => {
                self.0.push(stamp);
                self.0.len() - 1
            }
        };
        u32::try_from(place).expect("a header holds far fewer than 2^32 stamps")
    }
}

fn text<'a>(lww: &'a Option<Lww<String>>, stamps: &mut Stamps) -> Option<(&'a str, u32)> {
    lww.as_ref()
        .map(|l| (l.value.as_str(), stamps.place(l.stamp)))
}

fn person(p: &Participant) -> PersonRecord<'_> {
    PersonRecord {
        id: &p.id,
        name: p.name.as_deref(),
        email: p.email.as_deref(),
        phone: p.phone.as_deref(),
        attributes: pairs(&p.attributes),
    }
}

fn rating(r: &Rating) -> RatingRecord<'_> {
    RatingRecord {
        score: r.score,
        scale: r.scale.as_deref(),
        label: r.label.as_deref(),
        comment: r.comment.as_deref(),
    }
}

fn pairs(map: &std::collections::BTreeMap<String, String>) -> Vec<(&str, &str)> {
    map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn status_byte(status: ConversationStatus) -> u8 {
    ConversationStatus::ALL
        .iter()
        .position(|s| *s == status)
        .expect("every status is in ALL") as u8
}

/// The header record of `conversation`: everything but its messages and event keys.
pub(crate) fn encode_header(conversation: &Conversation) -> Result<Vec<u8>, StoreError> {
    // Every field named, so that a field added to `Conversation` is a compile error here
    // until the record holds it.
    let Conversation {
        id,
        vendor,
        status,
        started_at,
        ended_at,
        updated_at,
        end_reason,
        visitor,
        agents,
        assigned_agent,
        messages: _,
        tags,
        rating: conversation_rating,
        page_url,
        referrer,
        attributes,
        segments,
        event_keys: _,
        event_count,
        participant_fields,
        threads,
    } = conversation;
    let mut stamps = Stamps::default();
    let end_reason = text(end_reason, &mut stamps);
    let assigned_agent = text(assigned_agent, &mut stamps);
    let page_url = text(page_url, &mut stamps);
    let referrer = text(referrer, &mut stamps);
    let record = HeaderRecord {
        connection: id.connection.as_str(),
        external_id: &id.external_id,
        vendor,
        status: status_byte(*status),
        started_at: started_at.map(Timestamp::as_millis),
        ended_at: ended_at.map(Timestamp::as_millis),
        updated_at: updated_at.as_millis(),
        end_reason,
        visitor: visitor
            .as_ref()
            .map(|v| (person(&v.value), stamps.place(v.stamp))),
        agents: agents
            .iter()
            .map(|(id, a)| {
                (
                    id.as_str(),
                    a.value.as_ref().map(person),
                    stamps.place(a.stamp),
                )
            })
            .collect(),
        assigned_agent,
        tags: tags
            .iter()
            .map(|(tag, t)| (tag.as_str(), t.value, stamps.place(t.stamp)))
            .collect(),
        rating: conversation_rating
            .as_ref()
            .map(|r| (rating(&r.value), stamps.place(r.stamp))),
        page_url,
        referrer,
        attributes: attributes
            .iter()
            .map(|(k, a)| (k.as_str(), a.value.as_str(), stamps.place(a.stamp)))
            .collect(),
        segments: segments
            .iter()
            .map(|(k, s)| {
                let v = &s.value;
                let segment = SegmentRecord {
                    id: &v.id,
                    agent: v.agent.as_ref().map(person),
                    started_at: v.started_at.map(Timestamp::as_millis),
                    ended_at: v.ended_at.map(Timestamp::as_millis),
                    rating: v.rating.as_ref().map(rating),
                    attributes: pairs(&v.attributes),
                };
                (k.as_str(), segment, stamps.place(s.stamp))
            })
            .collect(),
        event_count: *event_count,
        participant_fields: participant_fields
            .iter()
            .map(|(k, f)| {
                let mut at = |s: &Option<Stamp>| s.map(|s| stamps.place(s));
                let fields = FieldsRecord {
                    id: at(&f.id),
                    name: at(&f.name),
                    email: at(&f.email),
                    phone: at(&f.phone),
                    attributes: f
                        .attributes
                        .iter()
                        .map(|(a, s)| (a.as_str(), stamps.place(*s)))
                        .collect(),
                    parked: f.parked.as_ref().map(person),
                };
                (k.as_str(), fields)
            })
            .collect(),
        threads: threads
            .iter()
            .map(|(k, t)| {
                (
                    k.as_str(),
                    status_byte(t.status),
                    t.started_at.map(Timestamp::as_millis),
                    stamps.place(t.first),
                )
            })
            .collect(),
        // Last: every field above has placed its stamps.
        stamps: stamps.0,
    };
    let bytes = postcard::to_extend(&record, vec![HEADER_RECORD])
        .map_err(|e| StoreError::Commit(format!("cannot encode a conversation: {e}")))?;
    Ok(pack_fast(bytes))
}

/// Decodes the header stored at `key`: a [`HEADER_RECORD`] (packed when long), or the JSON a
/// store of schema 3 to 6 wrote.
pub(crate) fn decode_header(key: &[u8], bytes: &[u8]) -> Result<Conversation, StoreError> {
    let bytes = unpack(key, bytes)?;
    let Some((&HEADER_RECORD, body)) = bytes.split_first() else {
        return decode(key, &bytes);
    };
    let corrupt = |reason: String| StoreError::corrupt(key, reason);
    let record: HeaderRecord<'_> =
        postcard::from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
    let stamps: Vec<Stamp> = record
        .stamps
        .iter()
        .map(|&(millis, hash)| Ok(Stamp(time(key, millis)?, hash)))
        .collect::<Result<_, StoreError>>()?;
    let stamp = |place: u32| {
        stamps
            .get(place as usize)
            .copied()
            .ok_or_else(|| corrupt(format!("no stamp {place}")))
    };
    let lww = |value: Option<(&str, u32)>| {
        value
            .map(|(v, at)| register(v.to_owned(), stamp(at)))
            .transpose()
    };
    let status = |byte: u8| {
        ConversationStatus::ALL
            .get(usize::from(byte))
            .copied()
            .ok_or_else(|| corrupt(format!("unknown status {byte}")))
    };
    let connection = ConnectionId::new(record.connection)
        .map_err(|e| corrupt(format!("its connection: {e}")))?;
    let mut conversation = Conversation::new(
        ConversationId::new(connection, record.external_id),
        record.vendor,
    );
    conversation.status = status(record.status)?;
    conversation.started_at = record.started_at.map(|t| time(key, t)).transpose()?;
    conversation.ended_at = record.ended_at.map(|t| time(key, t)).transpose()?;
    conversation.updated_at = time(key, record.updated_at)?;
    conversation.end_reason = lww(record.end_reason)?;
    conversation.visitor = record
        .visitor
        .map(|(p, at)| register(participant(p), stamp(at)))
        .transpose()?;
    for (id, agent, at) in record.agents {
        let agent = register(agent.map(participant), stamp(at))?;
        conversation.agents.insert(id.to_owned(), agent);
    }
    conversation.assigned_agent = lww(record.assigned_agent)?;
    for (tag, value, at) in record.tags {
        let tag_register = register(value, stamp(at))?;
        conversation.tags.insert(tag.to_owned(), tag_register);
    }
    conversation.rating = record
        .rating
        .map(|(r, at)| register(rating_of(r), stamp(at)))
        .transpose()?;
    conversation.page_url = lww(record.page_url)?;
    conversation.referrer = lww(record.referrer)?;
    for (name, value, at) in record.attributes {
        let attribute = register(value.to_owned(), stamp(at))?;
        conversation.attributes.insert(name.to_owned(), attribute);
    }
    for (id, s, at) in record.segments {
        let value = Segment {
            id: s.id.to_owned(),
            agent: s.agent.map(participant),
            started_at: s.started_at.map(|t| time(key, t)).transpose()?,
            ended_at: s.ended_at.map(|t| time(key, t)).transpose()?,
            rating: s.rating.map(rating_of),
            attributes: owned_pairs(s.attributes),
        };
        let segment = register(value, stamp(at))?;
        conversation.segments.insert(id.to_owned(), segment);
    }
    conversation.event_count = record.event_count;
    for (name, f) in record.participant_fields {
        let at = |place: Option<u32>| place.map(stamp).transpose();
        let fields = ParticipantFields {
            id: at(f.id)?,
            name: at(f.name)?,
            email: at(f.email)?,
            phone: at(f.phone)?,
            attributes: f
                .attributes
                .into_iter()
                .map(|(a, s)| Ok((a.to_owned(), stamp(s)?)))
                .collect::<Result<_, StoreError>>()?,
            parked: f.parked.map(participant),
        };
        conversation
            .participant_fields
            .insert(name.to_owned(), fields);
    }
    for (id, thread_status, started_at, first) in record.threads {
        let thread = ThreadStatus {
            status: status(thread_status)?,
            started_at: started_at.map(|t| time(key, t)).transpose()?,
            first: stamp(first)?,
        };
        conversation.threads.insert(id.to_owned(), thread);
    }
    Ok(conversation)
}

/// The stored header at `key` in `tree`, decoded, if any.
pub(crate) fn load_header(
    tree: &sled::Tree,
    key: &[u8],
) -> Result<Option<Conversation>, StoreError> {
    tree.get(key)?
        .map(|bytes| decode_header(key, &bytes))
        .transpose()
}

/// A last-writer-wins register of `value` at `stamp`, once the stamp is found.
fn register<T>(value: T, stamp: Result<Stamp, StoreError>) -> Result<Lww<T>, StoreError> {
    Ok(Lww {
        value,
        stamp: stamp?,
    })
}

fn participant(p: PersonRecord<'_>) -> Participant {
    Participant {
        id: p.id.to_owned(),
        name: p.name.map(str::to_owned),
        email: p.email.map(str::to_owned),
        phone: p.phone.map(str::to_owned),
        attributes: owned_pairs(p.attributes),
    }
}

fn rating_of(r: RatingRecord<'_>) -> Rating {
    Rating {
        score: r.score,
        scale: r.scale.map(str::to_owned),
        label: r.label.map(str::to_owned),
        comment: r.comment.map(str::to_owned),
    }
}

fn owned_pairs(pairs: Vec<(&str, &str)>) -> std::collections::BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn time(key: &[u8], millis: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millis(millis)
        .ok_or_else(|| StoreError::corrupt(key, format!("time {millis} out of range")))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn at(millis: i64, hash: u64) -> Stamp {
        Stamp(Timestamp::from_millis(millis).unwrap(), hash)
    }

    fn person(id: &str) -> Participant {
        Participant {
            id: id.into(),
            name: Some(format!("{id} name")),
            email: Some(format!("{id}@example.com")),
            phone: Some("+420123456789".into()),
            attributes: BTreeMap::from([("city".into(), "Brno".into())]),
        }
    }

    /// A header with every field set, several stamps shared and one field left empty of
    /// each kind where the type allows it.
    fn full() -> Conversation {
        let id = ConversationId::new(ConnectionId::new("lc").unwrap(), "chat/1");
        let mut c = Conversation::new(id, "livechat");
        let (a, b) = (at(1_700_000_000_000, 7), at(1_700_000_001_000, u64::MAX));
        c.status = ConversationStatus::Missed;
        c.started_at = Some(a.0);
        c.ended_at = Some(b.0);
        c.updated_at = b.0;
        c.end_reason = Some(Lww {
            value: "visitor_left".into(),
            stamp: b,
        });
        c.visitor = Some(Lww {
            value: person("v1"),
            stamp: a,
        });
        c.agents.insert(
            "a1".into(),
            Lww {
                value: Some(person("a1")),
                stamp: a,
            },
        );
        c.agents.insert(
            "a2".into(),
            Lww {
                value: None,
                stamp: b,
            },
        );
        c.assigned_agent = Some(Lww {
            value: "a1".into(),
            stamp: a,
        });
        c.tags.insert(
            "vip".into(),
            Lww {
                value: true,
                stamp: a,
            },
        );
        c.tags.insert(
            "spam".into(),
            Lww {
                value: false,
                stamp: b,
            },
        );
        let rating = Rating {
            score: Some(-3),
            scale: Some("1-5".into()),
            label: Some("bad".into()),
            comment: Some("slow".into()),
        };
        c.rating = Some(Lww {
            value: rating.clone(),
            stamp: b,
        });
        c.page_url = Some(Lww {
            value: "https://shop.example/".into(),
            stamp: a,
        });
        c.referrer = Some(Lww {
            value: "https://search.example/".into(),
            stamp: at(5, 5),
        });
        c.attributes.insert(
            "plan".into(),
            Lww {
                value: "pro".into(),
                stamp: a,
            },
        );
        let segment = Segment {
            id: "s1".into(),
            agent: Some(person("a1")),
            started_at: Some(a.0),
            ended_at: None,
            rating: Some(rating),
            attributes: BTreeMap::from([("queue".into(), "sales".into())]),
        };
        c.segments.insert(
            "s1".into(),
            Lww {
                value: segment,
                stamp: a,
            },
        );
        c.segments.insert(
            "s2".into(),
            Lww {
                value: Segment {
                    id: "s2".into(),
                    ..Segment::default()
                },
                stamp: b,
            },
        );
        c.event_count = 42;
        c.participant_fields.insert(
            "visitor".into(),
            ParticipantFields {
                id: Some(a),
                name: Some(b),
                email: None,
                phone: Some(a),
                attributes: BTreeMap::from([("city".into(), b)]),
                parked: None,
            },
        );
        c.participant_fields.insert(
            "agent:a2".into(),
            ParticipantFields {
                parked: Some(person("a2")),
                ..ParticipantFields::default()
            },
        );
        c.threads.insert(
            String::new(),
            ThreadStatus {
                status: ConversationStatus::Closed,
                started_at: None,
                first: a,
            },
        );
        c.threads.insert(
            "t2".into(),
            ThreadStatus {
                status: ConversationStatus::Missed,
                started_at: Some(b.0),
                first: b,
            },
        );
        c
    }

    #[test]
    fn every_field_round_trips_and_the_record_is_smaller_than_packed_json() {
        let conversation = full();
        let bytes = encode_header(&conversation).unwrap();
        assert_eq!(unpack(b"k", &bytes).unwrap()[0], HEADER_RECORD);
        assert_eq!(decode_header(b"conv/k", &bytes).unwrap(), conversation);
        let json = crate::record::encode(&conversation).unwrap();
        assert!(
            bytes.len() < json.len(),
            "{} bytes against {}",
            bytes.len(),
            json.len()
        );
        // An empty one too.
        let empty = Conversation::new(conversation.id.clone(), "v");
        assert_eq!(
            decode_header(b"k", &encode_header(&empty).unwrap()).unwrap(),
            empty
        );
    }

    #[test]
    fn messages_and_event_keys_are_not_in_the_header() {
        let mut conversation = full();
        conversation.event_keys.insert("k1".into());
        let bytes = encode_header(&conversation).unwrap();
        conversation.event_keys.clear();
        assert_eq!(decode_header(b"k", &bytes).unwrap(), conversation);
    }

    #[test]
    fn a_long_header_is_compressed_and_a_json_one_is_still_read() {
        let mut conversation = full();
        for i in 0..400 {
            conversation.attributes.insert(
                format!("path.{i}.url"),
                Lww {
                    value: format!("https://shop.example/item/{i}"),
                    stamp: at(i, 1),
                },
            );
        }
        let bytes = encode_header(&conversation).unwrap();
        assert!(bytes.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]), "compressed");
        assert_eq!(decode_header(b"k", &bytes).unwrap(), conversation);

        // What schemas 3 to 6 wrote: JSON, packed when long.
        for json in [
            crate::record::encode(&conversation).unwrap(),
            serde_json::to_vec(&full()).unwrap(),
        ] {
            let expected: Conversation = decode(b"k", &json).unwrap();
            assert_eq!(decode_header(b"k", &json).unwrap(), expected);
        }
    }

    #[test]
    fn a_damaged_record_is_corrupt() {
        let bytes = unpack(b"k", &encode_header(&full()).unwrap())
            .unwrap()
            .into_owned();
        for damaged in [
            bytes[..bytes.len() / 2].to_vec(),
            [&[HEADER_RECORD][..], &[0xFF; 40]].concat(),
            // A status byte past the last status.
            {
                let mut record = postcard::from_bytes::<HeaderRecord<'_>>(&bytes[1..]).unwrap();
                record.status = 9;
                postcard::to_extend(&record, vec![HEADER_RECORD]).unwrap()
            },
            // A field naming a stamp that is not in the table.
            {
                let mut record = postcard::from_bytes::<HeaderRecord<'_>>(&bytes[1..]).unwrap();
                record.stamps.truncate(1);
                postcard::to_extend(&record, vec![HEADER_RECORD]).unwrap()
            },
        ] {
            let error = decode_header(b"conv/k", &damaged).unwrap_err();
            assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        }
    }
}
