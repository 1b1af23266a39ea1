"""Modal dialogs: confirmations, the forms of the actions, the deployment picker and the help screen."""
