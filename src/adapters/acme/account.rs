//! The one ACME account: loaded from the vault, or registered with the CA and stored, once per
//! directory for every replica.

use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};

use super::http::{acme_http_client, RetryAfterNoting};
use super::retry::with_retries;
use super::{counted, AcmeClient, AcmeError, REQUEST_TIMEOUT};

/// The problem a CA answers a new account with when it wants External Account Binding.
const EXTERNAL_ACCOUNT_REQUIRED: &str = "urn:ietf:params:acme:error:externalAccountRequired";

impl AcmeClient {
    fn builder(&self) -> Result<instant_acme::AccountBuilder, instant_acme::Error> {
        let http = acme_http_client(self.ca_bundle.as_deref())?;
        Ok(Account::builder_with_http(Box::new(RetryAfterNoting(http))))
    }

    /// The account: loaded from the store, or registered with the CA and stored, exactly once
    /// (never registered by a client of a CA no longer configured).
    pub async fn account(&self) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let stored = self
            .vault
            .acme_credentials(&self.directory_url)
            .await
            .map_err(|e| AcmeError::account_setup("reading the stored account", e))?;
        let credentials_json = match stored {
            Some(json) => json,
            None if !self.registers_account => {
                return Err(AcmeError::NoStoredAccount {
                    directory: self.directory_url.clone(),
                })
            }
            // Replicas starting at once serialise here, and the first one's account is stored
            // before the next looks: one account is registered, not one per replica.
            None => self
                .vault
                .with_account_lock(self.register_unless_stored())
                .await
                .map_err(|e| AcmeError::account_setup("locking the account's registration", e))??,
        };
        let credentials: AccountCredentials = serde_json::from_str(&credentials_json)
            .map_err(|e| AcmeError::account_setup("reading the stored credentials", e))?;
        let account = self
            .builder()
            .map_err(|e| AcmeError::account_setup("building the HTTPS client", e))?
            .from_credentials(credentials);
        let account = tokio::time::timeout(REQUEST_TIMEOUT, account)
            .await
            .map_err(|e| AcmeError::account_setup("the ACME directory did not answer in time", e));
        let account = counted(
            "directory",
            account.and_then(|loaded| {
                loaded.map_err(|e| AcmeError::account_setup("loading the ACME directory", e))
            }),
        )?;
        *slot = Some(account.clone());
        Ok(account)
    }

    /// Under the account lock: the stored credentials if another process stored some
    /// meanwhile, or a newly registered account's, stored.
    async fn register_unless_stored(&self) -> Result<String, AcmeError> {
        if let Some(json) = self
            .vault
            .acme_credentials(&self.directory_url)
            .await
            .map_err(|e| AcmeError::account_setup("reading the stored account", e))?
        {
            return Ok(json);
        }
        let contact = self
            .contact_email
            .as_ref()
            .map(|email| format!("mailto:{email}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new_account = NewAccount {
            contact: &contacts,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let binding = self
            .external_account
            .as_ref()
            .map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
        let (account, credentials) = with_retries(|| async {
            counted(
                "new_account",
                self.builder()?
                    .create(&new_account, self.directory_url.clone(), binding.as_ref())
                    .await,
            )
        })
        .await
        .map_err(|error| match &error {
            instant_acme::Error::Api(problem)
                if problem.r#type.as_deref() == Some(EXTERNAL_ACCOUNT_REQUIRED) =>
            {
                AcmeError::account_setup(
                    "the CA requires External Account Binding: set ACME_EAB_KID and \
                     ACME_EAB_HMAC_KEY to the key id and HMAC key it issued",
                    error,
                )
            }
            _ => AcmeError::account_setup("registering the account", error),
        })?;
        let json = serde_json::to_string(&credentials)
            .map_err(|e| AcmeError::account_setup("writing the new account's credentials", e))?;
        // Stored unless a process without the lock (SQLite mode has none to share) stored one
        // first: the stored one wins, so every process uses the same account.
        let of_record = self
            .vault
            .store_acme_credentials(&self.directory_url, account.id(), &json)
            .await
            .map_err(|e| AcmeError::account_setup("storing the new account", e))?;
        tracing::info!(account_id = account.id(), "registered ACME account");
        Ok(of_record)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::adapters::store::Store;
    use crate::adapters::vault::{KeyEncryptionKey, KeyRing, KeyVault};

    /// A vault over a fresh SQLite file.
    async fn vault() -> KeyVault {
        let path = std::env::temp_dir().join(format!("account-test-{}.db", uuid::Uuid::new_v4()));
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connects");
        store.migrate().await.expect("migrates");
        KeyVault::new(store, KeyRing::new(KeyEncryptionKey::generate(), vec![]))
    }

    #[tokio::test]
    async fn a_ca_no_longer_configured_without_a_stored_account_is_refused_and_nothing_is_registered(
    ) {
        // As the service does: a client that would register reaches the CA instead of failing.
        crate::install_crypto_provider();
        // Where the CA would be: every connection to it is counted.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let directory = format!("https://{}/dir", listener.local_addr().expect("address"));
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let ca = tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(connection);
            }
        });
        let vault = vault().await;
        let client = AcmeClient::of_stored_account(
            directory.clone(),
            Some("ops@example.test".into()),
            None,
            vault.clone(),
        );

        let refused = client.account().await.map(|_| ()).expect_err("no account");
        assert!(
            matches!(&refused, AcmeError::NoStoredAccount { directory: named } if *named == directory),
            "{refused}"
        );
        assert!(refused.to_string().contains(&directory), "{refused}");
        assert_eq!(
            connections.load(Ordering::SeqCst),
            0,
            "the CA was not asked for an account"
        );
        assert_eq!(
            vault.acme_credentials(&directory).await.expect("reads"),
            None,
            "nothing stored"
        );
        ca.abort();
    }
}
