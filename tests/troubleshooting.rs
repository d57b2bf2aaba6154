//! README's "Troubleshooting clients", shown with the real git-annex: a
//! remote added without `annex.security.allowed-ip-addresses` is marked
//! `annex-ignore`; setting the address and running `git annex
//! enableremote` makes it usable again.

mod common;

use common::{Client, Mesh};

fn config(client: &Client, key: &str) -> Option<String> {
    let out = client.run(&["git", "config", "--get", key]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn forgotten_allowed_ip_addresses_is_fixed_by_enableremote() {
    let mesh = Mesh::up();
    let client = Client::new_uninit();
    client.ok(&["git", "init", "-q", "-b", "main"]);
    client.ok(&["git", "annex", "init", "client"]);
    let helper = format!("store --file={}", mesh.up_credentials().display());
    client.ok(&["git", "config", "credential.helper", &helper]);
    client.ok(&["git", "remote", "add", "mesh", &format!("{}/mesh", mesh.url())]);
    client.write_file("f.bin", 4096, 7);
    client.ok(&["git", "annex", "add", "f.bin"]);
    client.ok(&["git", "commit", "-q", "-m", "add f.bin"]);

    // The first contact is refused by git-annex itself, which then ignores
    // the remote.
    let pull = client.run(&["git", "annex", "pull", "mesh"]);
    let said =
        String::from_utf8_lossy(&pull.stderr).into_owned() + &String::from_utf8_lossy(&pull.stdout);
    assert!(said.contains("annex.security.allowed-ip-addresses"), "git-annex said: {said}");
    assert_eq!(config(&client, "remote.mesh.annex-ignore").as_deref(), Some("true"));

    // The documented fix. (git-annex retries an automatically ignored
    // remote by itself only at times, so a copy right after setting the
    // address may or may not see the remote.)
    client.ok(&["git", "config", "annex.security.allowed-ip-addresses", "127.0.0.1"]);
    client.ok(&["git", "annex", "enableremote", "mesh"]);
    assert_eq!(config(&client, "remote.mesh.annex-ignore").as_deref(), Some("false"));
    assert!(
        config(&client, "remote.mesh.annex-uuid").is_some(),
        "no annex-uuid after enableremote"
    );
    client.ok(&["git", "annex", "copy", "--to", "mesh", "f.bin"]);
    let whereis = client.ok(&["git", "annex", "whereis", "f.bin"]);
    assert!(whereis.contains("[mesh-node"), "the content is on no node: {whereis}");
}
