//! Endpoint slots and the verdict's clock with real BPF: endpoints found by
//! ifindex in a generation's slots below `EP_SLOTS` and in its hash above,
//! through in-place updates, generation swaps and the pins of a version
//! without slots; conntrack times on CLOCK_MONOTONIC.

#![allow(clippy::expect_used, reason = "tests panic with a message on failure")]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use aya::maps::{Array, ArrayOfMaps, HashMap, MapData};
use aya::programs::SchedClassifier;
use plinth_policies::abi::{
    CtKey, CtValue, DIR_INGRESS, EP_ENFORCE_INGRESS, EP_SLOTS, Endpoint, PolicyKey, PolicyValue,
};
use plinth_policies::compile::Compiled;
use plinth_policies::load::ct_gc::{CT4, monotonic_ns};
use plinth_policies::load::{Config, Datapath, UpdateMode};
use plinth_policies::net::Prefix;
use plinth_policies::netns::{self, PinDirGuard, TestNet};
use plinth_policies::testrun::{self, TC_ACT_OK, TC_ACT_SHOT, TCP_SYN};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const POD: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// The ifindex of `plbig`: past the slots.
const BIG: u32 = 70_000;
const _: () = assert!(BIG >= EP_SLOTS);

/// Endpoints (interface, ep id, flags), each allowing CLIENT on TCP/80 in.
fn world(eps: &[(&str, u32, u32)]) -> Compiled {
    let mut c = Compiled::default();
    c.identities
        .ipcache
        .insert(Prefix::new(Ipv4Addr::UNSPECIFIED.into(), 0), 2);
    c.identities.ipcache.insert(Prefix::host(IpAddr::V4(CLIENT)), 256);
    for (ifname, ep_id, flags) in eps {
        c.endpoints.insert(
            (*ifname).to_owned(),
            Endpoint {
                ep_id: *ep_id,
                flags: *flags,
            },
        );
        c.policy.insert(
            PolicyKey {
                ep_id: *ep_id,
                peer_id: 256,
                dir: DIR_INGRESS,
                proto: 6,
                dport: 80u16.to_be(),
            },
            PolicyValue {
                policy_id: 1,
                rule: 0,
                flags: 0,
            },
        );
    }
    c
}

/// The verdict of plinth_to_pod on a SYN from `src` seen on `ifindex`.
fn verdict(dp: &Datapath, ifindex: u32, src: Ipv4Addr, sport: u16) -> u32 {
    let p: &SchedClassifier = dp
        .ebpf_ref()
        .program("plinth_to_pod")
        .expect("program")
        .try_into()
        .expect("classifier");
    let pkt = testrun::ipv4_packet_flags(src, POD, 6, sport, 80, TCP_SYN);
    testrun::run(p, ifindex, &pkt, 1).expect("test run").0
}

/// A node namespace with veths `plsmall` (a small ifindex) and
/// `plbig` (ifindex [`BIG`]), and its pin directory.
fn node() -> (TestNet, PathBuf, PinDirGuard) {
    netns::ensure_bpffs().expect("bpffs");
    let net = TestNet::new(0).expect("node namespace");
    let node = net.node.clone();
    netns::ip(&[
        "-n",
        &node,
        "link",
        "add",
        "plsmall",
        "type",
        "veth",
        "peer",
        "plsmall-p",
    ])
    .expect("plsmall");
    netns::ip(&[
        "-n", &node, "link", "add", "plbig", "index", "70000", "type", "veth", "peer", "plbig-p",
    ])
    .expect("plbig");
    for dev in ["plsmall", "plbig"] {
        netns::ip(&["-n", &node, "link", "set", dev, "up"]).expect("up");
    }
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{node}"));
    (net, pin_dir.clone(), PinDirGuard(pin_dir))
}

fn ifindex(name: &str) -> u32 {
    nix::net::if_::if_nametoindex(name).expect("ifindex")
}

#[test]
fn endpoints_are_found_in_their_slot_below_the_slots_and_in_the_hash_above() {
    for mode in [UpdateMode::InPlace, UpdateMode::Swap] {
        let (net, pin_dir, _guard) = node();
        netns::in_netns(&net.node, move || {
            let mut dp = Datapath::load(&Config {
                pin_dir,
                update: mode,
                ..Config::default()
            })
            .expect("load");
            let small = ifindex("plsmall");
            assert!(small < EP_SLOTS, "{small}");
            assert_eq!(ifindex("plbig"), BIG);
            let enforced = [("plsmall", 1, EP_ENFORCE_INGRESS), ("plbig", 2, EP_ENFORCE_INGRESS)];
            dp.apply(&world(&enforced)).expect("apply");
            let ep = |ep_id, flags| Some(Endpoint { ep_id, flags });
            let slot = |dp: &Datapath, i| dp.generation().endpoint_slot(i).expect("slot");
            assert_eq!(slot(&dp, small), ep(1, EP_ENFORCE_INGRESS), "{mode:?}");
            assert_eq!(slot(&dp, BIG), None, "{mode:?}: past the slots");
            for i in [small, BIG] {
                assert_eq!(verdict(&dp, i, CLIENT, 40000), TC_ACT_OK, "{mode:?} {i}: allowed");
                assert_eq!(verdict(&dp, i, STRANGER, 40000), TC_ACT_SHOT, "{mode:?} {i}: denied");
            }

            // Not enforced any more: the slot and the hash follow.
            let open = [("plsmall", 1, 0), ("plbig", 2, 0)];
            dp.apply(&world(&open)).expect("apply");
            assert_eq!(slot(&dp, small), ep(1, 0), "{mode:?}");
            for i in [small, BIG] {
                assert_eq!(
                    verdict(&dp, i, STRANGER, 40001),
                    TC_ACT_OK,
                    "{mode:?} {i}: not enforced"
                );
            }

            // Gone: no endpoint, everything dropped (fail closed).
            dp.apply(&world(&[])).expect("apply");
            assert_eq!(slot(&dp, small), None, "{mode:?}");
            for i in [small, BIG] {
                assert_eq!(verdict(&dp, i, CLIENT, 40002), TC_ACT_SHOT, "{mode:?} {i}: no endpoint");
            }

            // Back.
            dp.apply(&world(&enforced)).expect("apply");
            assert_eq!(slot(&dp, small), ep(1, EP_ENFORCE_INGRESS), "{mode:?}");
            for i in [small, BIG] {
                assert_eq!(verdict(&dp, i, CLIENT, 40003), TC_ACT_OK, "{mode:?} {i}: allowed again");
                assert_eq!(
                    verdict(&dp, i, STRANGER, 40003),
                    TC_ACT_SHOT,
                    "{mode:?} {i}: denied again"
                );
            }
            dp.teardown().expect("teardown");
        })
        .expect("netns");
    }
}

#[test]
fn the_pins_of_a_version_without_endpoint_slots_keep_their_enforcement() {
    let (net, pin_dir, _guard) = node();
    netns::in_netns(&net.node, move || {
        let cfg = Config {
            pin_dir: pin_dir.clone(),
            ..Config::default()
        };
        let mut dp = Datapath::load(&cfg).expect("load");
        let small = ifindex("plsmall");
        dp.apply(&world(&[
            ("plsmall", 1, EP_ENFORCE_INGRESS),
            ("plbig", 2, EP_ENFORCE_INGRESS),
        ]))
        .expect("apply");
        // An agent of a version without slots left its pins: the same maps
        // without plinth_eps_gen.
        drop(dp);
        std::fs::remove_file(pin_dir.join("plinth_eps_gen")).expect("unpin the slots");
        let dp = Datapath::load(&cfg).expect("load over the older pins");
        assert_eq!(
            dp.generation().endpoint_slot(small).expect("slot"),
            Some(Endpoint {
                ep_id: 1,
                flags: EP_ENFORCE_INGRESS
            }),
            "the slots filled from the endpoint hash"
        );
        // Enforced as before, without an apply.
        for i in [small, BIG] {
            assert_eq!(verdict(&dp, i, CLIENT, 41000), TC_ACT_OK, "{i}: allowed");
            assert_eq!(verdict(&dp, i, STRANGER, 41000), TC_ACT_SHOT, "{i}: denied");
        }

        // A version without slots deletes plsmall's endpoint from the hash
        // alone, leaving its slot: the next load rebuilds the slots from the
        // hash, so plsmall has no endpoint (fail closed), as that version's
        // programs see it.
        drop(dp);
        let pinned = |name: &str| {
            aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(pin_dir.join(name)).expect("pin")).expect("map")
        };
        let active = Array::<MapData, u32>::try_from(pinned("plinth_gen"))
            .expect("plinth_gen")
            .get(&0, 0)
            .expect("active")
            & 1;
        let hashes: ArrayOfMaps<MapData, HashMap<MapData, u32, Endpoint>> =
            ArrayOfMaps::try_from(pinned("plinth_ep_gen")).expect("plinth_ep_gen");
        let mut hash = hashes.get(&active, 0).expect("the active endpoint hash");
        hash.remove(&small).expect("remove plsmall");
        let dp = Datapath::load(&cfg).expect("load over the older version's change");
        assert_eq!(dp.generation().endpoint_slot(small).expect("slot"), None);
        assert_eq!(verdict(&dp, small, CLIENT, 41001), TC_ACT_SHOT, "no endpoint");
        assert_eq!(verdict(&dp, BIG, CLIENT, 41001), TC_ACT_OK, "plbig as before");
        dp.teardown().expect("teardown");
    })
    .expect("netns");
}

#[test]
fn conntrack_times_are_clock_monotonic_at_the_tick_s_resolution() {
    let (net, pin_dir, _guard) = node();
    netns::in_netns(&net.node, move || {
        let mut dp = Datapath::load(&Config {
            pin_dir,
            ..Config::default()
        })
        .expect("load");
        let tick = dp.clock().tick_ns;
        assert!(
            [1_000_000, 3_333_333, 4_000_000, 10_000_000].contains(&tick),
            "tick {tick} ns: HZ 1000, 300, 250 or 100"
        );
        dp.apply(&world(&[("plsmall", 1, EP_ENFORCE_INGRESS)])).expect("apply");
        let before = monotonic_ns();
        assert_eq!(verdict(&dp, ifindex("plsmall"), CLIENT, 42000), TC_ACT_OK);
        let after = monotonic_ns();
        let ct: HashMap<&MapData, CtKey, CtValue> =
            HashMap::try_from(dp.ebpf_ref().map(CT4).expect("ct map")).expect("hash");
        let key = CtKey {
            ep_id: 1,
            saddr: CLIENT.octets(),
            daddr: POD.octets(),
            sport: 42000u16.to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            dir: DIR_INGRESS,
            pad: 0,
        };
        let v = ct.get(&key, 0).expect("the flow's entry");
        let lifetime = u64::try_from(Config::default().ct_lifetime_tcp.as_nanos()).expect("ns");
        let created = v.expires_ns - lifetime;
        // The tick's time: CLOCK_MONOTONIC within a tick (and the
        // calibration's error, well under a tick).
        assert!(
            created + 2 * tick >= before && created <= after + tick,
            "entry created at {created}, between {before} and {after} (tick {tick})"
        );
        assert_eq!(v.last_event_ns, created, "the event rate limit on the same clock");
        // A clock 5 s off (as NTP's slewing would make it, slowly) is put back on CLOCK_MONOTONIC by the next
        // conntrack collection.
        let good = dp.clock();
        dp.set_clock(plinth_policies::abi::Clock {
            offset_ns: good.offset_ns.wrapping_add(5_000_000_000),
            ..good
        })
        .expect("set clock");
        dp.ct_gc().expect("collect");
        let back = dp.clock().offset_ns.wrapping_sub(good.offset_ns) as i64;
        assert!(
            back.unsigned_abs() <= 2 * tick,
            "offset moved by {back} ns after the collection"
        );
        dp.teardown().expect("teardown");
    })
    .expect("netns");
}

#[test]
fn an_interface_recreated_under_its_name_is_attached_by_the_next_diff_even_an_empty_one() {
    let (net, pin_dir, _guard) = node();
    let node_ns = net.node.clone();
    netns::in_netns(&net.node, move || {
        let mut dp = Datapath::load(&Config {
            pin_dir,
            ..Config::default()
        })
        .expect("load");
        let c = world(&[("plsmall", 1, EP_ENFORCE_INGRESS)]);
        dp.apply(&c).expect("apply");
        let before = ifindex("plsmall");
        assert_eq!(verdict(&dp, before, STRANGER, 40000), TC_ACT_SHOT);
        // The pod's sandbox restarts: its veth comes back under the same name with a new index.
        netns::ip(&["-n", &node_ns, "link", "del", "plsmall"]).expect("del");
        netns::ip(&[
            "-n",
            &node_ns,
            "link",
            "add",
            "plsmall",
            "type",
            "veth",
            "peer",
            "plsmall-p",
        ])
        .expect("add");
        netns::ip(&["-n", &node_ns, "link", "set", "plsmall", "up"]).expect("up");
        let after = ifindex("plsmall");
        assert_ne!(before, after);
        // The world did not change: an empty diff.
        let report = dp
            .apply_diff(&c, &plinth_policies::compile::Diff::default())
            .expect("apply diff");
        assert!(
            report.changes() > 0,
            "the new interface's endpoint is written: {report:?}"
        );
        assert_eq!(verdict(&dp, after, CLIENT, 40001), TC_ACT_OK);
        assert_eq!(
            verdict(&dp, after, STRANGER, 40001),
            TC_ACT_SHOT,
            "enforced on the new interface"
        );
        let links = plinth_policies::load::attach::pinned_interfaces(dp.pin_dir());
        assert!(links.contains(&("plsmall".to_owned(), after)), "{links:?}");
        dp.teardown().expect("teardown");
    })
    .expect("netns");
}
