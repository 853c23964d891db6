//! Secrets Cofre makes for targets: a password that follows the instance's password policy, and
//! an Ed25519 key pair, both from the OS CSPRNG.

use cofre_core::password_policy::PasswordPolicy;
use rand::seq::SliceRandom;
use rand::Rng;
use zeroize::Zeroizing;

/// A password of the policy's length with one character of each required class at least, the
/// rest drawn uniformly from the whole alphabet, then shuffled so the required ones sit anywhere.
/// The policy is valid (from [`PasswordPolicy::new`]): every class has characters.
pub fn password(policy: &PasswordPolicy) -> Zeroizing<String> {
    let mut rng = rand::rngs::OsRng;
    let classes = policy.classes();
    let alphabet = policy.alphabet();
    let mut out = Zeroizing::new(Vec::with_capacity(policy.length));
    for (_, chars) in &classes {
        if let Some(&b) = chars.choose(&mut rng) {
            out.push(b);
        }
    }
    while out.len() < policy.length && !alphabet.is_empty() {
        out.push(alphabet[rng.gen_range(0..alphabet.len())]);
    }
    out.truncate(policy.length);
    out.shuffle(&mut rng);
    // Printable ASCII only, so this never fails; an empty string would fail the verify anyway.
    Zeroizing::new(String::from_utf8(out.to_vec()).unwrap_or_default())
}

/// 32 random bytes: the seed of a new Ed25519 key (the caller builds the key with its SSH library).
pub fn ed25519_seed() -> Zeroizing<[u8; 32]> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed[..]);
    seed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cofre_core::password_policy::Class;
    use proptest::prelude::*;

    fn policy_strategy() -> impl Strategy<Value = PasswordPolicy> {
        (
            12usize..=128,
            proptest::sample::subsequence(Class::ALL.to_vec(), 1..=4),
            proptest::collection::vec(0x21u8..=0x7e, 0..20),
        )
            .prop_filter_map("valid policy", |(len, classes, ex)| {
                let classes: Vec<&str> = classes.iter().map(|c| c.as_str()).collect();
                let ex = String::from_utf8(ex).ok()?;
                PasswordPolicy::new(len, &classes.join(","), &ex).ok()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Whatever valid policy an admin sets, every generated password follows it.
        #[test]
        fn generated_passwords_follow_the_policy(policy in policy_strategy()) {
            for _ in 0..5 {
                let p = password(&policy);
                prop_assert!(policy.admits(&p), "{:?} does not admit a generated password of length {}", policy, p.len());
            }
        }
    }

    #[test]
    fn passwords_differ_and_use_the_whole_alphabet() {
        let policy = PasswordPolicy::default();
        let a = password(&policy);
        let b = password(&policy);
        assert_ne!(*a, *b);
        // 200 passwords of 24 characters: every one of the 94 characters shows up.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.extend(password(&policy).bytes());
        }
        assert_eq!(seen.len(), policy.alphabet().len());
    }
}
