//! OpenPGP verification of a distribution's `InRelease` file (a
//! cleartext-signed `Release`) against the archive keys den ships, or a
//! keyring the user gives instead.
//!
//! rPGP checks signatures but has no key policy, so this module holds
//! gpgv's essentials: the key that signed (a primary key, or a subkey bound
//! to its primary by a valid binding and cross-signature) must be allowed
//! to sign, and neither it nor its primary may be expired or revoked when
//! the signature was made. Only self-signatures count: archive keys carry
//! third-party certifications that den cannot check and does not need.
//! The keys ship with den; `scripts/update-keys` re-extracts them and
//! `keys/SOURCES` names the packages they came from.

use std::borrow::Cow;
use std::io::Read;

use anyhow::{Result, anyhow, bail};
use pgp::armor::Dearmor;
use pgp::composed::{Deserializable, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{
    Packet, PacketParser, PacketTrait, PublicKey, RevocationCode, Signature, SignatureType,
};
use pgp::types::{KeyDetails, Tag, Timestamp};

/// Debian's archive keys (bookworm and trixie: automatic, security-automatic, stable), shipped with den.
pub const DEBIAN_KEYS: &[u8] = include_bytes!("keys/debian-archive-keys.gpg");
/// Ubuntu's archive keys (ubuntu-archive-keyring.gpg from the ubuntu-keyring package).
pub const UBUNTU_KEYS: &[u8] = include_bytes!("keys/ubuntu-archive-keys.gpg");

const CLEARTEXT_HEADER: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const SIGNATURE_HEADER: &str = "-----BEGIN PGP SIGNATURE-----";

/// Public keys trusted to sign archives.
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Public keys from binary (concatenated OpenPGP packets, as in /usr/share/keyrings/*.gpg) or ASCII-armored bytes; one or many keys.
    pub fn parse(bytes: &[u8]) -> Result<Keyring> {
        let binary = match bytes.first() {
            Some(first) if first & 0x80 == 0 => Cow::Owned(
                dearmor(bytes)
                    .map_err(|e| anyhow!("not an OpenPGP keyring, binary or armored: {e}"))?,
            ),
            _ => Cow::Borrowed(bytes),
        };
        // GnuPG keyring files (Ubuntu's among them) hold trust packets,
        // which stop rPGP's key parser before the user ids and subkeys.
        let packets = PacketParser::new(&binary[..]).filter(|packet| {
            !matches!(
                packet,
                Ok(Packet::Trust(_) | Packet::Marker(_) | Packet::Padding(_))
            )
        });
        let keys = SignedPublicKey::from_packets(packets.peekable())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("the keyring holds a damaged or unsupported key: {e}"))?;
        if keys.is_empty() {
            bail!("the keyring holds no OpenPGP public key");
        }
        Ok(Keyring { keys })
    }

    /// The keys (primary or subkey) a signature names as its issuer.
    fn signers_of(&self, sig: &Signature) -> Vec<Signer<'_>> {
        let (ids, fingerprints) = (sig.issuer_key_id(), sig.issuer_fingerprint());
        let named = |key: &dyn KeyDetails| {
            ids.contains(&&key.legacy_key_id()) || fingerprints.contains(&&key.fingerprint())
        };
        let mut signers = Vec::new();
        for cert in &self.keys {
            if named(&cert.primary_key) {
                signers.push(Signer { cert, subkey: None });
            }
            for subkey in cert.public_subkeys.iter().filter(|s| named(&s.key)) {
                signers.push(Signer {
                    cert,
                    subkey: Some(subkey),
                });
            }
        }
        signers
    }
}

/// A key of the keyring that may have made a signature.
struct Signer<'a> {
    cert: &'a SignedPublicKey,
    /// `None` when the primary key signed.
    subkey: Option<&'a SignedPublicSubKey>,
}

impl Signer<'_> {
    fn fingerprint(&self) -> String {
        match self.subkey {
            Some(subkey) => format!("{:X}", subkey.key.fingerprint()),
            None => format!("{:X}", self.cert.primary_key.fingerprint()),
        }
    }
}

/// Checks a cleartext-signed message (an `InRelease` file). Returns the signed text (dash-escaping undone,
/// i.e. the exact body that was signed, to be parsed by the caller) when at least one signature verifies
/// with a signing-capable key (primary or subkey) of `keyring`. Signatures by unknown keys are ignored (as gpgv does)
/// as long as one verifies.
///
/// The text is exactly the signed data (RFC 9580 §7.1: no trailing blanks on
/// a line; gpg does not sign the line break before the signature block, so
/// an InRelease gives its Release without the final one), with `\n` line ends.
pub fn verify_cleartext(keyring: &Keyring, text: &str) -> Result<String> {
    let (signed, block) = split_cleartext(text)?;
    let signatures = signatures(block)?;
    // Signatures cover the text with CRLF line ends (RFC 9580 §7.1).
    let canonical = signed.replace('\n', "\r\n");
    let (mut unknown, mut failure) = (Vec::new(), None);
    for sig in &signatures {
        let signers = keyring.signers_of(sig);
        if signers.is_empty() {
            unknown.push(issuer(sig));
            continue;
        }
        match check_any(sig, &signers, &canonical) {
            Ok(()) => return Ok(signed),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(failure) => Err(failure),
        None if unknown.is_empty() => bail!("the signed message carries no signature"),
        None => bail!(
            "signed only by keys not in the keyring: {}",
            unknown.join(", ")
        ),
    }
}

/// Splits a cleartext-signed message into the signed text (dash-escaping
/// and trailing blanks undone, `\n` line ends) and the armored signature
/// block. Not rPGP's parser: it rescans the text once per line, ~60 ms for
/// noble's 256 kB InRelease.
fn split_cleartext(text: &str) -> Result<(String, &str)> {
    let mut lines = text.split_inclusive('\n');
    if lines.next().map(str::trim_end) != Some(CLEARTEXT_HEADER) {
        bail!("not a cleartext-signed message: it does not start with {CLEARTEXT_HEADER}");
    }
    for header in lines
        .by_ref()
        .map(str::trim_end)
        .take_while(|l| !l.is_empty())
    {
        if !header.starts_with("Hash: ") {
            bail!("the signed message has an unexpected armor header: {header}");
        }
    }
    let mut signed = String::with_capacity(text.len());
    for line in lines {
        let content = line.trim_end_matches(['\r', '\n']);
        if content.trim_end() == SIGNATURE_HEADER {
            // The line break before the signature block is not signed.
            signed.pop();
            let block_start = line.as_ptr() as usize - text.as_ptr() as usize;
            return Ok((signed, &text[block_start..]));
        }
        let content = match content.strip_prefix('-') {
            Some(escaped) => escaped.strip_prefix(' ').ok_or_else(|| {
                anyhow!("the signed message has a line starting with an unescaped dash: {content}")
            })?,
            None => content,
        };
        signed.push_str(content.trim_end_matches([' ', '\t']));
        signed.push('\n');
    }
    bail!("the signed message has no signature block (no {SIGNATURE_HEADER} line)")
}

/// The signatures in an armored signature block, and nothing else.
fn signatures(block: &str) -> Result<Vec<Signature>> {
    let damaged = |e: &dyn std::fmt::Display| anyhow!("the signature block is damaged ({e})");
    let binary = dearmor(block.as_bytes()).map_err(|e| damaged(&e))?;
    PacketParser::new(&binary[..])
        .map(|packet| match packet {
            Ok(Packet::Signature(sig)) => Ok(sig),
            Ok(other) => Err(damaged(&format!("a {:?} packet", other.tag()))),
            Err(e) => Err(damaged(&e)),
        })
        .collect()
}

/// The binary packets of one or more concatenated ASCII-armored blocks.
fn dearmor(armored: &[u8]) -> Result<Vec<u8>> {
    let (mut binary, mut text) = (Vec::new(), armored.to_vec());
    while text.iter().any(|b| !b.is_ascii_whitespace()) {
        let mut block = Dearmor::new(&text[..]);
        block.read_to_end(&mut binary)?;
        let mut rest = Vec::new();
        block.into_parts().3.read_to_end(&mut rest)?;
        text = rest;
    }
    Ok(binary)
}

/// The issuer a signature names, for messages: its fingerprint, else its key id.
fn issuer(sig: &Signature) -> String {
    if let Some(fingerprint) = sig.issuer_fingerprint().first() {
        return format!("{fingerprint:X}");
    }
    match sig.issuer_key_id().first() {
        Some(id) => id.as_ref().iter().map(|b| format!("{b:02X}")).collect(),
        None => "an unnamed key".to_string(),
    }
}

/// Passes when one of `signers` (several only on a key id clash) made `sig`.
fn check_any(sig: &Signature, signers: &[Signer], signed: &str) -> Result<()> {
    let mut first_failure = None;
    for signer in signers {
        match check(sig, signer, signed) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    Err(first_failure.unwrap_or_else(|| anyhow!("no key to check the signature with")))
}

/// `sig` is `signer`'s signature over `signed`, and the key policy allows it.
fn check(sig: &Signature, signer: &Signer, signed: &str) -> Result<()> {
    let name = signer.fingerprint();
    if let Some(hash @ (HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160)) =
        sig.hash_alg()
    {
        bail!("the signature by {name} uses {hash:?}, a weak hash that den does not accept");
    }
    let verified = match signer.subkey {
        Some(subkey) => sig.verify(&subkey.key, signed.as_bytes()),
        None => sig.verify(&signer.cert.primary_key, signed.as_bytes()),
    };
    if verified.is_err() {
        bail!("the signature by {name} does not verify: the file was changed after it was signed");
    }
    let at = sig
        .created()
        .ok_or_else(|| anyhow!("the signature by {name} has no creation time"))?;
    let binding = valid_at(signer, at)?;
    if !binding.key_flags().sign() {
        bail!("key {name} is not allowed to make signatures");
    }
    Ok(())
}

/// Checks that the signing key and its primary were alive at `at`; returns
/// the self-signature that gives the signing key its flags.
fn valid_at<'a>(signer: &Signer<'a>, at: Timestamp) -> Result<&'a Signature> {
    let cert = signer.cert;
    let primary = &cert.primary_key;
    let primary_name = format!("{:X}", primary.fingerprint());
    let primary_sig = primary_self_signature(cert)
        .ok_or_else(|| anyhow!("key {primary_name} has no valid self-signature"))?;
    alive(&primary_name, primary.created_at(), primary_sig, at)?;
    let revocations = cert.details.revocation_signatures.iter();
    if revocations
        .filter(|r| r.verify_key(primary).is_ok())
        .any(|r| revokes(r, at))
    {
        bail!("key {primary_name} is revoked");
    }
    let Some(subkey) = signer.subkey else {
        return Ok(primary_sig);
    };
    let name = signer.fingerprint();
    let binding = subkey_binding(primary, subkey)
        .ok_or_else(|| anyhow!("subkey {name} is not validly bound to key {primary_name}"))?;
    alive(&name, subkey.key.created_at(), binding, at)?;
    let mut revocations = subkey.signatures.iter().filter(|s| {
        s.typ() == Some(SignatureType::SubkeyRevocation)
            && s.verify_subkey_binding(primary, &subkey.key).is_ok()
    });
    if revocations.any(|r| revokes(r, at)) {
        bail!("subkey {name} is revoked");
    }
    Ok(binding)
}

/// The primary key's newest self-signature that verifies (on a user id, or
/// a direct one): it carries the key's current flags and expiry, as in gpg.
fn primary_self_signature(cert: &SignedPublicKey) -> Option<&Signature> {
    let primary = &cert.primary_key;
    let on_users = cert.details.users.iter().flat_map(|user| {
        let valid = |s: &&Signature| {
            s.verify_certification(primary, Tag::UserId, &user.id)
                .is_ok()
        };
        user.signatures.iter().filter(valid)
    });
    let direct = cert
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.verify_key(primary).is_ok());
    on_users.chain(direct).max_by_key(|s| s.created())
}

/// The subkey's newest binding by its primary that verifies, with the
/// subkey's cross-signature (without it anyone could claim the subkey).
fn subkey_binding<'a>(
    primary: &PublicKey,
    subkey: &'a SignedPublicSubKey,
) -> Option<&'a Signature> {
    let cross_signed = |s: &Signature| {
        s.embedded_signature().is_some_and(|back| {
            back.verify_primary_key_binding(&subkey.key, primary)
                .is_ok()
        })
    };
    subkey
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .filter(|s| s.verify_subkey_binding(primary, &subkey.key).is_ok() && cross_signed(s))
        .max_by_key(|s| s.created())
}

/// Fails unless a key created at `created`, with the expiry `binding` gives
/// it, existed and had not expired at `at`.
fn alive(name: &str, created: Timestamp, binding: &Signature, at: Timestamp) -> Result<()> {
    if at < created {
        bail!("the signature is older than key {name} that made it");
    }
    let lifetime = binding.key_expiration_time().map_or(0, |d| d.as_secs());
    let end = u64::from(created.as_secs()) + u64::from(lifetime);
    if lifetime != 0 && u64::from(at.as_secs()) >= end {
        bail!(
            "key {name} expired on {}, before the signature was made on {}",
            date(end),
            date(at.as_secs().into())
        );
    }
    Ok(())
}

/// Whether a (verified) revocation voids a signature made at `at`: a key
/// superseded or retired stays good for what it signed before; any other
/// reason, or none, may mean a stolen key, so it voids everything.
fn revokes(revocation: &Signature, at: Timestamp) -> bool {
    match revocation.revocation_reason_code() {
        Some(RevocationCode::KeySuperseded | RevocationCode::KeyRetired) => {
            revocation.created().is_some_and(|revoked| revoked <= at)
        }
        _ => true,
    }
}

/// `YYYY-MM-DD` (UTC) of a Unix time, for messages (Hinnant's civil_from_days).
fn date(secs: u64) -> String {
    let z = (secs / 86_400) as i64 + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgp::composed::{ArmorOptions, CleartextSignedMessage, SignedKeyDetails};
    use pgp::crypto::public_key::PublicKeyAlgorithm;
    use pgp::crypto::{ed25519, eddsa_legacy};
    use pgp::packet::{
        KeyFlags, PubKeyInner, SecretKey, SignatureConfig, Subpacket, SubpacketData, UserId,
    };
    use pgp::types::{
        Duration, KeyVersion, Mpi, PacketHeaderVersion, Password, PlainSecretParams, PublicParams,
        SecretParams, SignatureBytes,
    };

    const BOOKWORM: &str = include_str!("testdata/bookworm-InRelease");
    const NOBLE: &str = include_str!("testdata/noble-InRelease");

    fn debian() -> Keyring {
        Keyring::parse(DEBIAN_KEYS).unwrap()
    }

    fn error(keyring: &Keyring, text: &str) -> String {
        verify_cleartext(keyring, text).unwrap_err().to_string()
    }

    #[test]
    fn archives_verify_with_the_shipped_keys() {
        let ubuntu = Keyring::parse(UBUNTU_KEYS).unwrap();
        for (keyring, text) in [(debian(), BOOKWORM), (ubuntu, NOBLE)] {
            let body = verify_cleartext(&keyring, text).unwrap();
            assert!(body.starts_with("Origin: "), "{}", &body[..40]);
            assert!(body.contains("\nSHA256:\n"));
            assert!(!body.contains("-----BEGIN PGP"));
        }
    }

    #[test]
    fn every_bookworm_signature_verifies() {
        // Two RSA subkeys (bookworm and trixie automatic) and an Ed25519
        // primary key (bookworm stable): both key paths, both algorithms.
        let (signed, block) = split_cleartext(BOOKWORM).unwrap();
        let (keyring, signed) = (debian(), signed.replace('\n', "\r\n"));
        let kinds: Vec<_> = signatures(block)
            .unwrap()
            .iter()
            .map(|sig| {
                let signers = keyring.signers_of(sig);
                check_any(sig, &signers, &signed).unwrap();
                signers[0].subkey.is_some()
            })
            .collect();
        assert_eq!(kinds, [true, true, false]);
    }

    #[test]
    fn split_agrees_with_rpgp() {
        let own = test_key(DAY, 0).sign(RELEASE, HashAlgorithm::Sha256);
        for text in [BOOKWORM, NOBLE, &own] {
            let (msg, _) = CleartextSignedMessage::from_string(text).unwrap();
            let (signed, block) = split_cleartext(text).unwrap();
            assert_eq!(signed.replace('\n', "\r\n"), msg.signed_text());
            assert_eq!(signatures(block).unwrap(), msg.signatures());
        }
    }

    #[test]
    fn one_changed_character_fails() {
        let text = BOOKWORM.replacen("Codename: bookworm", "Codename: bookwork", 1);
        assert!(error(&debian(), &text).contains("changed after it was signed"));
    }

    #[test]
    fn unsigned_text_fails() {
        let body = BOOKWORM
            .split("-----BEGIN PGP SIGNATURE-----")
            .next()
            .unwrap();
        assert!(error(&debian(), body).contains("signature block"));
        let plain = body.split_once("\n\n").unwrap().1;
        assert!(error(&debian(), plain).contains("not a cleartext-signed message"));
    }

    #[test]
    fn unknown_signers_are_named() {
        let ubuntu = Keyring::parse(UBUNTU_KEYS).unwrap();
        let message = error(&ubuntu, BOOKWORM);
        assert!(
            message.starts_with("signed only by keys not in the keyring"),
            "{message}"
        );
        // The bookworm automatic signing subkey.
        assert!(message.contains("6ED0E7B82643E131"), "{message}");
    }

    #[test]
    fn armored_keyring_parses_as_binary_does() {
        let binary = debian();
        let armored: String = binary
            .keys
            .iter()
            .map(|key| key.to_armored_string(ArmorOptions::default()).unwrap())
            .collect();
        let keyring = Keyring::parse(armored.as_bytes()).unwrap();
        let fingerprints = |k: &Keyring| k.keys.iter().map(|k| k.fingerprint()).collect::<Vec<_>>();
        assert_eq!(fingerprints(&keyring), fingerprints(&binary));
        assert_eq!(keyring.keys.len(), 6);
        assert!(verify_cleartext(&keyring, BOOKWORM).is_ok());
    }

    /// A throw-away Ed25519 key made from a fixed seed: the pgp crate's
    /// key generator wants a `rand` 0.8 generator, which den does not have.
    struct TestKey {
        secret: SecretKey,
        cert: SignedPublicKey,
    }

    const DAY: u32 = 86_400;

    fn now() -> u32 {
        Timestamp::now().as_secs()
    }

    /// A key created `age` seconds ago, valid for `lifetime` (0: forever).
    fn test_key(age: u32, lifetime: u32) -> TestKey {
        let ed = ed25519::SecretKey::try_from_bytes([7; 32], ed25519::Mode::EdDSALegacy).unwrap();
        let plain = PlainSecretParams::EdDSALegacy(eddsa_legacy::SecretKey::Ed25519(ed));
        let created = Timestamp::from_secs(now() - age);
        let public = PublicKey::from_inner(
            PubKeyInner::new(
                KeyVersion::V4,
                PublicKeyAlgorithm::EdDSALegacy,
                created,
                None,
                PublicParams::try_from(&plain).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let secret = SecretKey::new(public.clone(), SecretParams::Plain(plain)).unwrap();
        let user =
            UserId::from_str(PacketHeaderVersion::New, "den test <test@den.invalid>").unwrap();
        let mut flags = KeyFlags::default();
        flags.set_certify(true);
        flags.set_sign(true);
        let mut packets = vec![SubpacketData::KeyFlags(flags)];
        if lifetime != 0 {
            packets.push(SubpacketData::KeyExpirationTime(Duration::from_secs(
                lifetime,
            )));
        }
        let config = signature_config(
            SignatureType::CertPositive,
            HashAlgorithm::Sha256,
            &public,
            packets,
        );
        let self_sig = config
            .sign_certification(&secret, &public, &Password::empty(), Tag::UserId, &user)
            .unwrap();
        let details =
            SignedKeyDetails::new(vec![], vec![], vec![user.into_signed(self_sig)], vec![]);
        let cert = SignedPublicKey::new(public, details, vec![]);
        TestKey { secret, cert }
    }

    /// A v4 signature config made now by `key`, with `extra` hashed subpackets.
    fn signature_config(
        typ: SignatureType,
        hash: HashAlgorithm,
        key: &PublicKey,
        extra: Vec<SubpacketData>,
    ) -> SignatureConfig {
        let mut config = SignatureConfig::v4(typ, PublicKeyAlgorithm::EdDSALegacy, hash);
        let base = [
            SubpacketData::SignatureCreationTime(Timestamp::now()),
            SubpacketData::IssuerFingerprint(key.fingerprint()),
        ];
        config.hashed_subpackets = base
            .into_iter()
            .chain(extra)
            .map(|data| Subpacket::regular(data).unwrap())
            .collect();
        config
    }

    impl TestKey {
        /// The public key alone, through the armored form a user would give.
        fn keyring(&self) -> Keyring {
            let armored = self
                .cert
                .to_armored_string(ArmorOptions::default())
                .unwrap();
            Keyring::parse(armored.as_bytes()).unwrap()
        }

        fn sign(&self, text: &str, hash: HashAlgorithm) -> String {
            let public = &self.cert.primary_key;
            let config = signature_config(SignatureType::Text, hash, public, vec![]);
            CleartextSignedMessage::new(text, config, &self.secret, &Password::empty())
                .unwrap()
                .to_armored_string(ArmorOptions::default())
                .unwrap()
        }

        fn revoke(&mut self) {
            let public = &self.cert.primary_key;
            let config = signature_config(
                SignatureType::KeyRevocation,
                HashAlgorithm::Sha256,
                public,
                vec![],
            );
            let revocation = config
                .sign_key(&self.secret, &Password::empty(), public)
                .unwrap();
            self.cert.details.revocation_signatures.push(revocation);
        }
    }

    const RELEASE: &str = "Origin: den\nSuite: test\n-dashed: line\nSHA256:\n 00 1 main/x\n";

    #[test]
    fn own_key_verifies_and_unknown_key_fails() {
        let key = test_key(DAY, 0);
        let signed = key.sign(RELEASE, HashAlgorithm::Sha256);
        assert!(signed.contains("\n- -dashed: line\n"), "{signed}");
        assert_eq!(verify_cleartext(&key.keyring(), &signed).unwrap(), RELEASE);
        let message = error(&debian(), &signed);
        let fingerprint = format!("{:X}", key.cert.primary_key.fingerprint());
        assert!(message.contains(&fingerprint), "{message}");
    }

    #[test]
    fn weak_hash_fails() {
        let key = test_key(DAY, 0);
        let public = &key.cert.primary_key;
        let config = signature_config(SignatureType::Text, HashAlgorithm::Sha1, public, vec![]);
        // rPGP will not make a SHA-1 signature; a forged one must be
        // refused for its hash before anything else.
        let forged = Signature::from_config(
            config,
            [0; 2],
            SignatureBytes::Mpis(vec![Mpi::from_slice(&[1]); 2]),
        )
        .unwrap();
        let signed = CleartextSignedMessage::new_many(RELEASE, |_| Ok(vec![forged]))
            .unwrap()
            .to_armored_string(ArmorOptions::default())
            .unwrap();
        let message = error(&key.keyring(), &signed);
        assert!(message.contains("weak hash"), "{message}");
    }

    #[test]
    fn expired_key_fails() {
        let key = test_key(10 * DAY, DAY);
        let signed = key.sign(RELEASE, HashAlgorithm::Sha256);
        assert!(error(&key.keyring(), &signed).contains("expired on"));
    }

    #[test]
    fn revoked_key_fails() {
        let mut key = test_key(DAY, 0);
        key.revoke();
        let signed = key.sign(RELEASE, HashAlgorithm::Sha256);
        assert!(error(&key.keyring(), &signed).contains("is revoked"));
    }

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_700_000_000), "2023-11-14");
        assert_eq!(date(951_782_400), "2000-02-29");
    }
}
