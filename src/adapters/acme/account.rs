//! The one ACME account: loaded from the vault, or registered with the CA and stored, once per
//! directory for every replica.

use instant_acme::{Account, AccountCredentials, NewAccount};

use super::http::acme_http_client;
use super::retry::with_retries;
use super::{counted, AcmeClient, AcmeError, REQUEST_TIMEOUT};

impl AcmeClient {
    fn builder(&self) -> Result<instant_acme::AccountBuilder, instant_acme::Error> {
        let http = acme_http_client(self.ca_bundle.as_deref())?;
        Ok(Account::builder_with_http(Box::new(http)))
    }

    /// The account: loaded from the store, or registered with the CA and stored, exactly once.
    pub async fn account(&self) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let setup = |e: &dyn std::fmt::Display| AcmeError::AccountSetup(e.to_string());
        let stored = self
            .vault
            .acme_credentials(&self.directory_url)
            .await
            .map_err(|e| setup(&e))?;
        let credentials_json = match stored {
            Some(json) => json,
            // Replicas starting at once serialise here, and the first one's account is stored
            // before the next looks: one account is registered, not one per replica.
            None => self
                .vault
                .with_account_lock(self.register_unless_stored())
                .await
                .map_err(|e| setup(&e))??,
        };
        let credentials: AccountCredentials =
            serde_json::from_str(&credentials_json).map_err(|e| setup(&e))?;
        let account = self
            .builder()
            .map_err(|e| setup(&e))?
            .from_credentials(credentials);
        let account = tokio::time::timeout(REQUEST_TIMEOUT, account)
            .await
            .map_err(|_| setup(&"the ACME directory did not answer in time"));
        let account = counted(
            "directory",
            account.and_then(|loaded| loaded.map_err(|e| setup(&e))),
        )?;
        *slot = Some(account.clone());
        Ok(account)
    }

    /// Under the account lock: the stored credentials if another process stored some
    /// meanwhile, or a newly registered account's, stored.
    async fn register_unless_stored(&self) -> Result<String, AcmeError> {
        let setup = |e: &dyn std::fmt::Display| AcmeError::AccountSetup(e.to_string());
        if let Some(json) = self
            .vault
            .acme_credentials(&self.directory_url)
            .await
            .map_err(|e| setup(&e))?
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
        let (account, credentials) = with_retries(|| async {
            counted(
                "new_account",
                self.builder()?
                    .create(&new_account, self.directory_url.clone(), None)
                    .await,
            )
        })
        .await
        .map_err(|e| setup(&e))?;
        let json = serde_json::to_string(&credentials).map_err(|e| setup(&e))?;
        // Stored unless a process without the lock (SQLite mode has none to share) stored one
        // first: the stored one wins, so every process uses the same account.
        let of_record = self
            .vault
            .store_acme_credentials(&self.directory_url, account.id(), &json)
            .await
            .map_err(|e| setup(&e))?;
        tracing::info!(account_id = account.id(), "registered ACME account");
        Ok(of_record)
    }
}
