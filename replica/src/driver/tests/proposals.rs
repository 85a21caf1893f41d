//! How client requests become proposals: together, and as the bytes they came as.
use super::*;

/// The Accept slots in `effects`, each with its command count.
fn accept_slots(effects: &[Effect]) -> Vec<(Slot, usize)> {
    let mut v: Vec<(Slot, usize)> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                msg: Message::Accept { slot, batch, .. },
                ..
            } => Some((*slot, batch.0.len())),
            _ => None,
        })
        .collect();
    v.dedup();
    v
}

#[test]
fn requests_handled_together_are_proposed_in_one_slot_and_all_answered() {
    let mut g = Group::new(3, true, None);
    g.advance(Duration::from_secs(3));
    let events: Vec<Event> = (0..5u64)
        .map(|k| Event::Client {
            id: 100 + k,
            request: Request::Submit {
                commands: vec![put(k, &format!("k{k}"), "v").into()],
            },
            origin: None,
        })
        .collect();
    let effects = g.drivers[0].handle_all(g.now, events);
    let slots = accept_slots(&effects);
    assert_eq!(slots.len(), 1, "one slot for the five: {slots:?}");
    assert_eq!(slots[0].1, 5);
    // The rest of the round as usual: every request gets its own answer.
    for e in effects {
        match e {
            Effect::Send { to, msg } => g.queue.push_back((
                to.0 as usize,
                Event::Peer {
                    from: SiteId(0),
                    msg,
                },
            )),
            Effect::Persist { token, records } => {
                g.disks[0].extend(records);
                g.queue
                    .push_back((0, Event::Persisted { token, log_size: 0 }));
            }
            _ => {}
        }
    }
    g.run();
    for k in 0..5u64 {
        assert!(
            matches!(g.take_reply(100 + k), Reply::Done { .. }),
            "request {k} answered"
        );
    }
}

#[test]
fn a_submitted_command_reaches_the_log_as_the_bytes_it_came_as() {
    let mut g = Group::new(3, true, None);
    g.advance(Duration::from_secs(3));
    let wire = bytes::Bytes::from(put(3, "k", "v").encode());
    let cmd = crate::kv::EncodedCommand::checked(wire.clone()).expect("decodes");
    let effects = g.drivers[0].handle(
        g.now,
        Event::Client {
            id: 7,
            request: Request::Submit {
                commands: vec![cmd],
            },
            origin: None,
        },
    );
    let carried = effects
        .iter()
        .find_map(|e| match e {
            Effect::Send {
                msg: Message::Accept { batch, .. },
                ..
            } => Some(batch.0[0].clone()),
            _ => None,
        })
        .expect("an accept");
    assert_eq!(carried, wire);
    // Not re-encoded on the way: the very same buffer.
    assert_eq!(carried.as_ptr(), wire.as_ptr());
}

#[test]
fn a_command_that_does_not_decode_is_refused_before_it_is_carried() {
    assert!(crate::kv::EncodedCommand::checked(vec![0xff; 3]).is_err());
    let ok = crate::kv::EncodedCommand::checked(get("k").encode()).expect("decodes");
    assert!(ok.is_read_only());
    assert!(!crate::kv::EncodedCommand::from(put(1, "k", "v")).is_read_only());
}
