"""Accounts: log in/out, password, users and teams (admins), the audit log.

URL names are not namespaced: base.html and LOGIN_URL use "login"/"logout".
"""

from django.urls import path

from dashboard.accounts import views_admin, views_audit, views_auth

urlpatterns = [
    path("login/", views_auth.login_view, name="login"),
    path("logout/", views_auth.logout_view, name="logout"),
    path("password/", views_auth.password_change, name="accounts_password"),
    path("users/", views_admin.users, name="accounts_users"),
    path("users/create/", views_admin.user_create, name="accounts_user_create"),
    path("users/<int:uid>/password/", views_admin.user_password, name="accounts_user_password"),
    path("users/<int:uid>/active/", views_admin.user_active, name="accounts_user_active"),
    path("users/<int:uid>/grant/", views_admin.user_grant, name="accounts_user_grant"),
    path("users/<int:uid>/revoke/", views_admin.user_revoke, name="accounts_user_revoke"),
    path("teams/", views_admin.teams, name="accounts_teams"),
    path("teams/create/", views_admin.team_create, name="accounts_team_create"),
    path("teams/<int:tid>/delete/", views_admin.team_delete, name="accounts_team_delete"),
    path("teams/<int:tid>/grant/", views_admin.team_grant, name="accounts_team_grant"),
    path("teams/<int:tid>/revoke/", views_admin.team_revoke, name="accounts_team_revoke"),
    path("teams/<int:tid>/member/", views_admin.team_member, name="accounts_team_member"),
    path("audit/", views_audit.audit, name="accounts_audit"),
    path("audit.csv", views_audit.audit_csv, name="accounts_audit_csv"),
]
