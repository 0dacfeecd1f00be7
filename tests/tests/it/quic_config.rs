//! `[transport.iroh]`'s QUIC windows: out-of-range values are refused naming the key, and the values
//! given reach the QUIC transport config the endpoint is bound with.

use duet::Config;

#[test]
fn quic_windows_out_of_range_name_their_key() {
    for (text, key) in [
        ("stream_receive_window = 8388608", "transport.iroh.stream_receive_window"),
        ("stream_receive_window = 1024", "transport.iroh.stream_receive_window"),
        ("receive_window = 65536", "transport.iroh.receive_window"),
        ("send_window = 10", "transport.iroh.send_window"),
    ] {
        let err = Config::from_toml(&format!("[transport.iroh]\n{text}\n")).unwrap_err();
        assert_eq!(err.key(), key, "{text}: {err}");
    }
}

#[test]
fn configured_windows_reach_the_quic_transport_config() {
    let cfg = Config::from_toml(
        "[transport.iroh]\nstream_receive_window = 524288\nreceive_window = 67108864\nsend_window = 33554432\n",
    )
    .unwrap();
    assert_eq!(cfg.transport.iroh.receive_window, 64 << 20);
    let quic = format!("{:?}", duet::iroh::endpoint::transport_config_for(&cfg.transport.iroh));
    for field in ["stream_receive_window: 524288", "receive_window: 67108864", "send_window: 33554432"] {
        assert!(quic.contains(field), "{field} missing from {quic}");
    }
    let defaults = format!("{:?}", duet::iroh::endpoint::transport_config());
    assert!(defaults.contains("receive_window: 16777216"), "{defaults}");
}
